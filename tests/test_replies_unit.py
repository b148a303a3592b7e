"""The reply document and the batching of live partial text."""

from __future__ import annotations

import asyncio

import pytest

from jobqueue.contract import build_reply
from node_agent import replies
from node_agent.replies import PARTIAL_FLUSH_CHARS, LiveText


def test_reply_timings_are_milliseconds_from_creation_claim_and_end() -> None:
    reply = build_reply(
        "id-1", "done", created_at=100.0, claimed_at=100.25, started_at=100.5, ttft_s=0.04, finished_at=101.5
    )
    assert reply["timings"]["queued_ms"] == 250.0
    assert reply["timings"]["ttft_ms"] == 40.0
    assert reply["timings"]["total_ms"] == 1000.0
    assert reply["status"] == "done"


def test_reply_of_a_job_never_started_has_no_durations() -> None:
    reply = build_reply("id-1", "expired", error="expired", finished_at=5.0)
    assert reply["timings"]["queued_ms"] is None
    assert reply["timings"]["total_ms"] is None
    assert reply["error"] == "expired"


class Writes:
    """What a LiveText writes, in order; each write takes ``delay_s``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.sent: list[dict[str, str]] = []
        self.delay_s = delay_s
        self.any = asyncio.Event()

    async def __call__(self, texts: dict[str, str]) -> None:
        await asyncio.sleep(self.delay_s)
        self.sent.append(texts)
        self.any.set()


def test_live_text_of_every_job_goes_in_one_write_and_nothing_is_lost() -> None:
    writes = Writes()

    async def run() -> None:
        live = LiveText(writes)
        for i in range(100):
            live.add("a", f"{i} ")
            live.add("b", "x")
        await live.flush()
        live.add("a", "tail")
        assert await live.take("a") == "tail"  # for the call that settles the job
        assert await live.take("b") == ""
        await live.flush()  # nothing left: no write

    asyncio.run(run())
    assert writes.sent == [{"a": "".join(f"{i} " for i in range(100)), "b": "x" * 100}]


def test_a_jobs_tail_waits_for_the_batch_in_flight_so_its_text_stays_in_order() -> None:
    writes = Writes(delay_s=0.2)

    async def run() -> None:
        live = LiveText(writes)
        live.add("a", "first ")
        batch = asyncio.create_task(live.flush())
        await asyncio.sleep(0.05)  # the batch is being written
        live.add("a", "last")
        writes.sent.append({"a": await live.take("a")})  # as the settling call would write it
        await batch

    asyncio.run(run())
    assert writes.sent == [{"a": "first "}, {"a": "last"}]


def test_a_job_holding_512_characters_is_written_before_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replies, "PARTIAL_FLUSH_S", 30.0)
    writes = Writes()

    async def run() -> None:
        live = LiveText(writes)
        loop = asyncio.create_task(live.loop())
        live.add("a", "x" * (PARTIAL_FLUSH_CHARS - 1))
        await asyncio.sleep(0.3)
        assert writes.sent == []  # under the size, and the interval is long
        live.add("a", "y")
        async with asyncio.timeout(5):
            await writes.any.wait()
        loop.cancel()

    asyncio.run(run())
    assert writes.sent == [{"a": "x" * (PARTIAL_FLUSH_CHARS - 1) + "y"}]


def test_the_text_of_a_failed_attempt_is_not_written() -> None:
    writes = Writes()

    async def run() -> None:
        live = LiveText(writes)
        live.add("a", "half a reply")
        live.add("b", "kept")
        live.discard("a")
        await live.flush()

    asyncio.run(run())
    assert writes.sent == [{"b": "kept"}]
