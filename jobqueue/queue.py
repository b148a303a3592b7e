"""The queue's operations, for a synchronous client (the router) and an asyncio one (the agent).

Why Redis Streams with a consumer group, not lists with LMOVE
-------------------------------------------------------------
Both give at-least-once delivery. With lists, the "processing" list is a copy of the job that the agent must
remove itself, and a visibility timeout needs a side structure (a sorted set of deadlines) that every claim and
every sweep must keep in step with the list by hand, in Lua. A stream with a consumer group already keeps, per
entry, who holds it, since when (idle time) and how often it was delivered: the pending entries list. On top of it

* a claim is XREADGROUP (a busy agent's ``finish`` script claims the next entry for the slot it frees, in the same
  round trip); a dead agent's entries come back through XAUTOCLAIM once they have been idle for the claim timeout,
  with no extra bookkeeping;
* a live agent keeps its claims fresh with XCLAIM ... JUSTID (resets the idle time, counts no delivery);
* a retry with back-off, or a hand-back at shutdown, is XCLAIM ... IDLE: the entry becomes due for the sweep
  after exactly the back-off, without a second queue or a timer;
* XLEN counts queued plus in-flight jobs (entries are deleted when settled), which is what the idle check needs.

Each job is one ``job:<id>`` string with a TTL (300 s while queued) and one stream entry that names it. An entry
whose job key has gone is an expired job: the agent still claims it and writes an ``expired`` reply, so no job is
ever dropped without a reply. The reply in S3 is written with ``If-None-Match: *``: whatever the number of
attempts, the first final reply stands and is the only one.

Every multi-key change is one Lua script, so a crash between two Redis calls cannot half-apply it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Literal, cast

import redis
import redis.asyncio

from jobqueue import contract
from jobqueue.contract import Job

SCRIPT_NAMES: Final = ("enqueue", "begin", "finish", "release", "refresh", "withdraw", "append")


def script_source(name: str) -> str:
    """The text of one Lua script, as shipped in the package (also usable with ``redis-cli --eval``)."""
    return resources.files("jobqueue").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


class EnqueueError(Exception):
    """Redis refused a job. ``code`` is BADKEY, BADJOB, QUEUEFULL or DUPLICATE."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _enqueue_error(exc: redis.ResponseError) -> EnqueueError:
    code, _, message = str(exc).partition(" ")
    return EnqueueError(code, message or code)


@dataclass(frozen=True)
class Entry:
    """One claimed queue entry: the stream entry id and the job id it names."""

    entry_id: str
    job_id: str


@dataclass(frozen=True)
class Attempt:
    """What ``begin`` decided about a claimed entry."""

    kind: Literal["finished", "expired", "run", "exhausted"]
    raw: str = ""
    number: int = 0
    last_error: str = ""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _attempt(result: list[Any]) -> Attempt:
    kind = _text(result[0])
    if kind in ("finished", "expired"):
        return Attempt(kind)  # type: ignore[arg-type]
    return Attempt(kind, _text(result[1]), int(result[2]), _text(result[3]))  # type: ignore[arg-type]


def _stream_messages(reply: Any) -> list[Any]:
    """Messages of the one stream read by XREADGROUP, in the RESP2 (list) or RESP3 (map) shape."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(next(iter(reply.values()))[0])
    return list(reply[0][1])


def _entries(messages: list[Any]) -> list[Entry]:
    entries = []
    for entry_id, fields in messages:
        if fields is None:  # entry deleted while pending; nothing to run
            continue
        job_id = fields.get(b"id") or fields.get("id") or b""
        entries.append(Entry(_text(entry_id), _text(job_id)))
    return entries


def result_payload(status: str, finished_at: float, error: str | None) -> str:
    return json.dumps({"status": status, "finished_at": finished_at, "error": error})


def dead_letter_payload(job_id: str, reason: str, raw: str, at: float) -> str:
    return json.dumps({"id": job_id, "reason": reason, "at": at, "job": raw})


def _enqueue_call(job: Job) -> tuple[list[str], list[Any]]:
    return [contract.job_key(job["id"]), contract.QUEUE_STREAM, contract.owner_key(job["id"])], [
        contract.encode(job),
        contract.JOB_TTL_S,
        contract.MAX_QUEUE_LENGTH,
        contract.RESULT_TTL_S,
    ]


def _per_job_keys(job_id: str) -> list[str]:
    return [
        contract.QUEUE_STREAM,
        contract.job_key(job_id),
        contract.attempts_key(job_id),
        contract.result_key(job_id),
        contract.reply_stream_key(job_id),
    ]


@dataclass(frozen=True)
class Progress:
    """Where a job stands, as far as Redis knows (``owner`` is None for an unknown or forgotten job)."""

    owner: str | None
    result: dict[str, Any] | None
    queued: bool
    started: bool
    text: str


class JobQueue:
    """Synchronous side, for the router: throttle, enqueue, and read what the agent published."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._enqueue = client.register_script(script_source("enqueue"))
        self._throttle = client.register_script(script_source("throttle"))

    def enqueue(self, job: Job) -> str:
        """Store and queue a job atomically; returns the stream entry id."""
        keys, args = _enqueue_call(job)
        try:
            return _text(self._enqueue(keys=keys, args=args))
        except redis.ResponseError as exc:
            raise _enqueue_error(exc) from None

    def take_token(
        self, user: str, burst: int = contract.THROTTLE_BURST, per_minute: int = contract.THROTTLE_PER_MINUTE
    ) -> int:
        """Spend one of ``user``'s tokens: 0 when the call may go ahead, else milliseconds until it may."""
        allowed, wait_ms = self._throttle(keys=[contract.rate_key(user)], args=[burst, per_minute / 60])
        return 0 if int(allowed) else max(int(wait_ms), 1)

    def depth(self) -> int:
        return int(cast(int, self.redis.xlen(contract.QUEUE_STREAM)))

    def heartbeat(self) -> dict[str, Any] | None:
        """What the agent last said about the node, or None when it has not said anything lately."""
        return self._json(contract.HEARTBEAT)

    def result(self, job_id: str) -> dict[str, Any] | None:
        """The settled status of a job (``done`` / ``failed`` / ``expired``), or None while it is not settled."""
        return self._json(contract.result_key(job_id))

    def progress(self, job_id: str) -> Progress:
        """Everything the result route needs about one job, read in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(contract.owner_key(job_id))
            pipe.get(contract.result_key(job_id))
            pipe.exists(contract.job_key(job_id))
            pipe.exists(contract.attempts_key(job_id))
            pipe.xrange(contract.reply_stream_key(job_id))
            owner, result, queued, started, stream = pipe.execute()
        return Progress(
            owner=None if owner is None else _text(owner),
            result=None if result is None else dict(json.loads(result)),
            queued=bool(queued),
            started=bool(started),
            text=partial_text(stream),
        )

    def request_wake(self) -> None:
        """Ask for the node to be started again should it stop while jobs wait (see ``contract.WAKE``)."""
        self.redis.set(contract.WAKE, "1", ex=contract.JOB_TTL_S)

    def take_wake(self) -> bool:
        """Consume the wake request: True when there was one and jobs still wait."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.getdel(contract.WAKE)
            pipe.xlen(contract.QUEUE_STREAM)
            wake, depth = pipe.execute()
        return wake is not None and int(depth) > 0

    def cancel_wake(self) -> None:
        self.redis.delete(contract.WAKE)

    def _json(self, key: str) -> dict[str, Any] | None:
        raw = cast(bytes | None, self.redis.get(key))
        return None if raw is None else dict(json.loads(raw))


def partial_text(entries: list[Any]) -> str:
    """The live text of the latest attempt, from the entries of ``reply:<id>``.

    ``begin`` writes an ``attempt`` marker before each attempt, so text of an attempt that died is dropped.
    """
    parts: list[str] = []
    for _, raw in entries:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "attempt" in fields:
            parts.clear()
        elif "text" in fields:
            parts.append(fields["text"])
    return "".join(parts)


class AsyncJobQueue:
    """The agent's side: claim, run, settle, release."""

    def __init__(self, client: redis.asyncio.Redis, consumer: str) -> None:
        self.redis = client
        self.consumer = consumer
        self._scripts = {name: client.register_script(script_source(name)) for name in SCRIPT_NAMES}

    async def ensure_group(self) -> None:
        """Create the consumer group (reading from the start, so jobs queued before it are not skipped)."""
        try:
            await self.redis.xgroup_create(contract.QUEUE_STREAM, contract.CONSUMER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, job: Job) -> str:
        keys, args = _enqueue_call(job)
        try:
            return _text(await self._scripts["enqueue"](keys=keys, args=args))
        except redis.ResponseError as exc:
            raise _enqueue_error(exc) from None

    async def own_pending(self, count: int) -> list[Entry]:
        """Entries this consumer name still holds from an earlier run of the agent (after a crash)."""
        reply = await self.redis.xreadgroup(
            contract.CONSUMER_GROUP, self.consumer, {contract.QUEUE_STREAM: "0"}, count=count
        )
        return _entries(_stream_messages(reply))

    async def claim_new(self, count: int, block_ms: int) -> list[Entry]:
        reply = await self.redis.xreadgroup(
            contract.CONSUMER_GROUP, self.consumer, {contract.QUEUE_STREAM: ">"}, count=count, block=block_ms
        )
        return _entries(_stream_messages(reply))

    async def reclaim(self, count: int, min_idle_ms: int) -> list[Entry]:
        """Take over entries that have been idle for ``min_idle_ms``: their agent died or released them."""
        reply = await self.redis.xautoclaim(
            contract.QUEUE_STREAM, contract.CONSUMER_GROUP, self.consumer, min_idle_ms, "0-0", count=count
        )
        return _entries(reply[1])

    async def begin(self, entry: Entry, max_attempts: int) -> Attempt:
        result = await self._scripts["begin"](
            keys=_per_job_keys(entry.job_id),
            args=[
                contract.CONSUMER_GROUP,
                entry.entry_id,
                max_attempts,
                contract.CLAIMED_TTL_S,
                contract.REPLY_STREAM_TTL_S,
            ],
        )
        return _attempt(result)

    async def finish(
        self,
        entry: Entry,
        status: str,
        finished_at: float,
        error: str | None,
        raw: str,
        *,
        live_tail: str = "",
        claim: int = 0,
    ) -> list[Entry]:
        """Settle the job (its reply is in S3); ``live_tail`` is the live text not yet in ``reply:<id>``, written
        just before the final status. With ``claim``, the same call claims up to that many new entries, as
        ``claim_new`` without blocking, and returns them: a busy agent refills the slot in the same round trip.
        (Should the reply be lost on the way, an entry claimed so waits in this consumer's pending list until the
        sweep takes it back after the claim timeout, as one that ``claim_new`` lost would.)"""
        dead = ""
        if status != "done":
            dead = dead_letter_payload(entry.job_id, error or status, raw, finished_at)
        messages = await self._scripts["finish"](
            keys=[*_per_job_keys(entry.job_id), contract.DEAD_LETTERS],
            args=[
                contract.CONSUMER_GROUP,
                entry.entry_id,
                result_payload(status, finished_at, error),
                contract.RESULT_TTL_S,
                dead,
                contract.DEAD_LETTER_LENGTH,
                status,
                contract.REPLY_STREAM_TTL_S,
                live_tail,
                self.consumer,
                claim,
            ],
        )
        # a script's reply is RESP's plain array, not the field map redis-py makes of XREADGROUP's own
        return _entries(
            [(entry_id, dict(zip(fields[::2], fields[1::2], strict=True))) for entry_id, fields in messages]
        )

    async def release(self, entry: Entry, idle_ms: int, error: str, *, refund: bool) -> None:
        """Give a claimed entry back; due again after the claim timeout minus ``idle_ms``.

        ``refund`` takes back the attempt that ``begin`` counted (a hand-back at shutdown is no failure).
        """
        await self._scripts["release"](
            keys=[contract.QUEUE_STREAM, contract.attempts_key(entry.job_id)],
            args=[
                contract.CONSUMER_GROUP,
                self.consumer,
                entry.entry_id,
                max(idle_ms, 0),
                error,
                "1" if refund else "0",
            ],
        )

    async def refresh(self, entries: list[Entry]) -> set[str]:
        """Keep claims alive; returns the entry ids another consumer has taken over."""
        if not entries:
            return set()
        lost = await self._scripts["refresh"](
            keys=[contract.QUEUE_STREAM, *(contract.job_key(e.job_id) for e in entries)],
            args=[
                contract.CONSUMER_GROUP,
                self.consumer,
                contract.CLAIMED_TTL_S,
                *(e.entry_id for e in entries),
            ],
        )
        return {_text(x) for x in lost}

    async def depth(self) -> int:
        return int(await self.redis.xlen(contract.QUEUE_STREAM))

    async def memory_percent(self) -> float | None:
        """Used memory against ``maxmemory``, in percent; None where Redis has no limit."""
        info = await self.redis.info("memory")
        limit = int(info.get("maxmemory", 0))
        return None if limit <= 0 else round(100 * int(info["used_memory"]) / limit, 2)

    async def entries(self, count: int) -> list[Entry]:
        """Every entry in the queue, claimed or not, oldest first (at most ``count``)."""
        return _entries(await self.redis.xrange(contract.QUEUE_STREAM, count=count))

    async def job(self, job_id: str) -> str | None:
        """The stored JSON of a job, or None when it is settled or expired."""
        raw = await self.redis.get(contract.job_key(job_id))
        return None if raw is None else _text(raw)

    async def withdraw(self, entry: Entry) -> str | None:
        """Take an unsettled job out of the queue (to park it in S3); its JSON, or None if there is none."""
        raw = await self._scripts["withdraw"](
            keys=[
                contract.QUEUE_STREAM,
                contract.job_key(entry.job_id),
                contract.owner_key(entry.job_id),
                contract.attempts_key(entry.job_id),
                contract.result_key(entry.job_id),
            ],
            args=[contract.CONSUMER_GROUP, entry.entry_id],
        )
        return None if raw is None else _text(raw)

    async def publish_heartbeat(self, payload: dict[str, Any], ttl_s: int) -> None:
        await self.redis.set(contract.HEARTBEAT, json.dumps(payload), ex=ttl_s)

    async def clear_heartbeat(self) -> None:
        await self.redis.delete(contract.HEARTBEAT)

    async def append_partial(self, texts: Mapping[str, str]) -> None:
        """Append live text to the streams ``reply:<id>`` that clients follow while jobs run: every job's text in
        one script call (one round trip, one command to build and one reply to parse, where a pipeline would have
        two of each per job), each stream kept readable for a while after its last update. Each stream stands
        alone: one connection keeps their order."""
        if texts:
            await self._scripts["append"](
                keys=[contract.reply_stream_key(job_id) for job_id in texts],
                args=[contract.REPLY_STREAM_TTL_S, *texts.values()],
            )
