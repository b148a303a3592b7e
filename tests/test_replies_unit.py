"""The reply document and the batching of live partial text."""

from __future__ import annotations

import asyncio

from jobqueue.contract import build_reply
from node_agent.replies import PARTIAL_FLUSH_CHARS, PartialText


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


def test_partial_text_is_batched_and_nothing_is_lost() -> None:
    sent: list[dict[str, str]] = []

    async def append(fields: dict[str, str]) -> None:
        sent.append(fields)

    async def run() -> None:
        partial = PartialText(append)
        for _ in range(PARTIAL_FLUSH_CHARS):
            await partial.add("ab")
        await partial.add("tail")
        await partial.flush()

    asyncio.run(run())
    text = "".join(f["text"] for f in sent)
    assert text == "ab" * PARTIAL_FLUSH_CHARS + "tail"
    assert 1 < len(sent) < PARTIAL_FLUSH_CHARS  # batched, not one write per token
