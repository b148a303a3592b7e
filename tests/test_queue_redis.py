"""The job contract's Lua scripts on a real redis-server."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
import redis

from jobqueue import contract
from jobqueue.queue import AsyncJobQueue, EnqueueError, JobQueue, partial_text, script_source

pytestmark = pytest.mark.slow


def async_client(r: redis.Redis) -> redis.asyncio.Redis:
    """An asyncio client (the agent's kind) on the same server as the test's synchronous one."""
    return redis.asyncio.Redis(port=r.connection_pool.connection_kwargs["port"])


def enqueue_raw(r: redis.Redis, key: str, payload: str) -> object:
    owner = "owner:" + key.removeprefix("job:")
    return r.eval(script_source("enqueue"), 3, key, contract.QUEUE_STREAM, owner, payload, contract.JOB_TTL_S, 1000, 60)


def test_enqueue_stores_job_with_300s_ttl_and_queues_it(r: redis.Redis) -> None:
    job = contract.new_job("hello", "user-1")
    JobQueue(r).enqueue(job)
    assert json.loads(r.get(contract.job_key(job["id"])) or "") == job
    assert 295 <= r.ttl(contract.job_key(job["id"])) <= 300
    ((_, fields),) = r.xrange(contract.QUEUE_STREAM)
    assert fields == {"id": job["id"]}


@pytest.mark.parametrize(
    "key",
    [
        "job:not-a-uuid",
        f"job:{str(uuid.uuid4()).upper()}",
        f"job:{uuid.uuid1()}",
        f"jobs:{uuid.uuid4()}",
        f"job:{uuid.uuid4()}:x",
        "reply:abc",
    ],
    ids=["not-a-uuid", "upper-case", "uuid1", "other-prefix", "suffix", "reply"],  # the same on every worker
)
def test_enqueue_rejects_a_key_that_is_not_job_uuid4(r: redis.Redis, key: str) -> None:
    with pytest.raises(redis.ResponseError, match="BADKEY"):
        enqueue_raw(r, key, "{}")
    assert r.dbsize() == 0  # nothing half-written


def test_enqueue_rejects_payload_not_matching_its_key(r: redis.Redis) -> None:
    key = contract.job_key(str(uuid.uuid4()))
    with pytest.raises(redis.ResponseError, match="BADJOB payload id"):
        enqueue_raw(r, key, json.dumps({"id": str(uuid.uuid4())}))
    with pytest.raises(redis.ResponseError, match="BADJOB payload is not a JSON object"):
        enqueue_raw(r, key, "not json")
    assert r.dbsize() == 0


def test_duplicate_job_is_refused_and_keeps_the_first(r: redis.Redis) -> None:
    q = JobQueue(r)
    job = contract.new_job("first", "u")
    q.enqueue(job)
    with pytest.raises(EnqueueError) as caught:
        q.enqueue({**job, "prompt": "second"})
    assert caught.value.code == "DUPLICATE"
    assert json.loads(r.get(contract.job_key(job["id"])) or "")["prompt"] == "first"
    assert q.depth() == 1


def test_full_queue_refuses_new_jobs(r: redis.Redis) -> None:
    q = JobQueue(r)
    pipe = r.pipeline()
    for _ in range(contract.MAX_QUEUE_LENGTH):
        pipe.xadd(contract.QUEUE_STREAM, {"id": "x"})
    pipe.execute()
    with pytest.raises(EnqueueError) as caught:
        q.enqueue(contract.new_job("one too many", "u"))
    assert caught.value.code == "QUEUEFULL"


def test_attempts_are_counted_then_exhausted_and_a_settled_job_is_not_run_again(r: redis.Redis) -> None:
    async def scenario() -> None:
        client = async_client(r)
        q = AsyncJobQueue(client, "agent-a")
        await q.ensure_group()
        job = contract.new_job("hello", "u")
        await q.enqueue(job)
        (entry,) = await q.claim_new(10, 100)
        assert entry.job_id == job["id"]
        first = await q.begin(entry, max_attempts=2)
        assert (first.kind, first.number) == ("run", 1)
        assert await client.ttl(contract.job_key(job["id"])) > contract.JOB_TTL_S  # claimed: kept longer
        await q.release(entry, 0, "boom", refund=False)
        second = await q.begin(entry, max_attempts=2)
        assert (second.kind, second.number, second.last_error) == ("run", 2, "boom")
        third = await q.begin(entry, max_attempts=2)
        assert third.kind == "exhausted"
        await q.finish(entry, "failed", time.time(), "gave up", third.raw)
        assert await client.xlen(contract.QUEUE_STREAM) == 0
        assert await client.exists(contract.job_key(job["id"]), contract.attempts_key(job["id"])) == 0
        (dead,) = await client.lrange(contract.DEAD_LETTERS, 0, -1)
        assert json.loads(dead)["reason"] == "gave up"
        assert (await q.begin(entry, max_attempts=2)).kind == "finished"
        await client.aclose()

    asyncio.run(scenario())


def test_shutdown_hand_back_does_not_count_as_an_attempt(r: redis.Redis) -> None:
    async def scenario() -> None:
        client = async_client(r)
        a, b = AsyncJobQueue(client, "agent-a"), AsyncJobQueue(client, "agent-b")
        await a.ensure_group()
        job = contract.new_job("hello", "u")
        await a.enqueue(job)
        (entry,) = await a.claim_new(1, 100)
        assert (await a.begin(entry, 3)).number == 1
        await a.release(entry, 60_000, "", refund=True)
        (taken,) = await b.reclaim(10, min_idle_ms=60_000)  # due at once for the sweep
        assert taken == entry
        assert (await b.begin(taken, 3)).number == 1
        await client.aclose()

    asyncio.run(scenario())


def test_finish_claims_the_next_new_entry_for_the_slot_when_asked(r: redis.Redis) -> None:
    async def scenario() -> None:
        client = async_client(r)
        a, b = AsyncJobQueue(client, "agent-a"), AsyncJobQueue(client, "agent-b")
        await a.ensure_group()
        jobs = [contract.new_job(f"job {i}", "u") for i in range(4)]
        for job in jobs:
            await a.enqueue(job)
        (first,) = await a.claim_new(1, 100)
        (given_to_b,) = await b.claim_new(1, 100)  # b holds the second: delivered already, not new
        await a.begin(first, 3)
        nxt = await a.finish(first, "done", time.time(), None, "", claim=1)
        assert [e.job_id for e in nxt] == [jobs[2]["id"]]  # the oldest new entry, none b or a held
        assert given_to_b.job_id == jobs[1]["id"]
        pending = await client.xpending_range(contract.QUEUE_STREAM, contract.CONSUMER_GROUP, "-", "+", 10, "agent-a")
        assert [p["message_id"].decode() for p in pending] == [nxt[0].entry_id]  # a holds it now, settled `first`
        assert (await a.begin(nxt[0], 3)).kind == "run"
        assert await a.finish(nxt[0], "done", time.time(), None, "") == []  # not asked: claims nothing
        (last,) = await a.claim_new(5, 100)
        assert last.job_id == jobs[3]["id"]  # it was left in the queue
        await a.begin(last, 3)
        assert await a.finish(last, "done", time.time(), None, "", claim=1) == []  # nothing new: no wait either
        assert await client.xlen(contract.QUEUE_STREAM) == 1  # only b's entry is left
        await client.aclose()

    asyncio.run(scenario())


def test_live_text_of_several_jobs_is_appended_in_one_call_each_stream_with_its_ttl(r: redis.Redis) -> None:
    async def scenario() -> None:
        client = async_client(r)
        q = AsyncJobQueue(client, "agent-a")
        await q.append_partial({"one": "Hel", "two": "Wor"})
        await q.append_partial({"one": "lo"})
        await q.append_partial({})  # nothing streamed since: nothing sent
        for job_id, text in (("one", "Hello"), ("two", "Wor")):
            key = contract.reply_stream_key(job_id)
            assert partial_text(await client.xrange(key)) == text
            assert 0 < await client.ttl(key) <= contract.REPLY_STREAM_TTL_S
        await client.aclose()

    asyncio.run(scenario())


def test_refresh_keeps_own_claims_and_reports_those_taken_over(r: redis.Redis) -> None:
    async def scenario() -> None:
        client = async_client(r)
        a, b = AsyncJobQueue(client, "agent-a"), AsyncJobQueue(client, "agent-b")
        await a.ensure_group()
        for _ in range(2):
            await a.enqueue(contract.new_job("hello", "u"))
        mine, stolen = await a.claim_new(2, 100)
        await asyncio.sleep(0.2)
        assert await b.reclaim(1, min_idle_ms=100) == [mine]  # a seems dead for `mine`
        assert await a.refresh([mine, stolen]) == {mine.entry_id}
        assert await b.reclaim(10, min_idle_ms=150) == []  # `stolen` was refreshed: not idle any more
        await client.aclose()

    asyncio.run(scenario())


def test_expired_job_is_reported_not_dropped(r: redis.Redis) -> None:
    async def scenario() -> None:
        client = async_client(r)
        q = AsyncJobQueue(client, "agent-a")
        await q.ensure_group()
        job = contract.new_job("hello", "u")
        await q.enqueue(job)
        await client.pexpire(contract.job_key(job["id"]), 1)
        await asyncio.sleep(0.05)
        (entry,) = await q.claim_new(1, 100)
        assert (await q.begin(entry, 3)).kind == "expired"
        await client.aclose()

    asyncio.run(scenario())


def test_cancelled_redis_call_cancels_the_task(redis_server) -> None:  # type: ignore[no-untyped-def]
    """The agent's shutdown hands jobs back by cancelling them; the Redis client must let that through."""

    async def scenario() -> list[str]:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        outcomes = []
        for delay_ms in range(10, 40, 3):

            async def busy() -> None:
                while True:
                    await client.xlen("anything")

            task = asyncio.create_task(busy())
            await asyncio.sleep(delay_ms / 1000)
            task.cancel()
            _, pending = await asyncio.wait({task}, timeout=1)
            outcomes.append("swallowed" if pending else "cancelled")
            if pending:
                task.cancel()
        await client.aclose()
        return outcomes

    assert set(asyncio.run(scenario())) == {"cancelled"}


def test_memory_is_reported_against_maxmemory_and_not_without_one(r: redis.Redis) -> None:
    async def scenario() -> tuple[float | None, float | None]:
        client = async_client(r)
        q = AsyncJobQueue(client, "agent-a")
        unlimited = await q.memory_percent()
        await client.config_set("maxmemory", "64mb")
        used = int((await client.info("memory"))["used_memory"])
        limited = await q.memory_percent()
        await client.config_set("maxmemory", "0")
        await client.aclose()
        assert limited is not None and abs(limited - 100 * used / (64 * 1024 * 1024)) < 1
        return unlimited, limited

    unlimited, limited = asyncio.run(scenario())
    assert unlimited is None and limited is not None and 0 < limited < 100
