"""The job runner: one job's life, from the claim to the settled reply.

``JobRunner.start`` runs a claimed entry as a task: ``begin`` it in Redis (which says whether to run, give up or
only settle), generate on the model server with the live text in Redis, store the final reply in S3 (write-once),
settle the job in Redis, and record its figures (log, Prometheus, CloudWatch). A retryable model failure hands
the job back with a back-off; a crash of this code leaves the claim to expire, so the job is retried."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions

from jobqueue import contract
from jobqueue.contract import Job, JobError, build_reply, is_chat
from jobqueue.queue import AsyncJobQueue, Attempt, Entry
from node_agent.aio import RETRY_MAX_S, TRANSIENT, retry
from node_agent.backend import Backend, BackendError
from node_agent.idle import IdleClock
from node_agent.life import Life
from node_agent.metrics import CloudWatchPublisher, Metrics
from node_agent.replies import LiveText, ReplyStore
from node_agent.settings import Settings

log = logging.getLogger("node_agent")


@dataclass
class Running:
    entry: Entry
    begun: bool = False
    claimed: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    refill: list[Entry] = field(default_factory=list)
    """The next job for this slot, claimed by the call that settled this one: it starts as this one ends."""


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        life: Life,
        *,
        queue: AsyncJobQueue,
        backend: Backend,
        replies: ReplyStore,
        metrics: Metrics,
        cloudwatch: CloudWatchPublisher,
        idle: IdleClock,
    ) -> None:
        self.s = settings
        self.life = life
        self.queue = queue
        self.backend = backend
        self.replies = replies
        self.metrics = metrics
        self.cloudwatch = cloudwatch
        self.idle = idle
        self.model = settings.model
        """The model the jobs are sent to: the setting, or the first the model server names once it is up."""
        self.claim_timeout_ms = int(settings.claim_timeout_s * 1000)
        self.running: dict[str, Running] = {}
        self.live = LiveText(self._write_live)
        """The running jobs' live text, written together (its loop runs beside the claim loop)."""

    def start(self, entry: Entry) -> None:
        running = Running(entry)
        self.running[entry.entry_id] = running
        self.metrics.in_flight.set(len(self.running))
        running.task = asyncio.create_task(self._task(running), name=f"job-{entry.job_id}")

    async def hand_back(self, entry: Entry) -> None:
        """Give back a claim this agent will not run now (it stops, or its slots are full): due for the sweep at once,
        the attempt not counted. Should Redis be away, the claim expires instead."""
        with contextlib.suppress(*TRANSIENT):
            await self.queue.release(entry, self.claim_timeout_ms, "", refund=False)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [r.task for r in self.running.values() if r.task is not None]

    async def _task(self, running: Running) -> None:
        entry = running.entry
        try:
            await self._run(running)
        except asyncio.CancelledError:
            # Shutdown grace ran out: give the job back at once, without counting this attempt.
            with contextlib.suppress(*TRANSIENT):
                await self.queue.release(entry, self.claim_timeout_ms, "", refund=running.begun)
            log.warning("job handed back at shutdown", extra={"job_id": entry.job_id})
            raise
        except Exception:
            # A bug, not a job failure: leave the claim to expire so the job is retried, and keep the agent up.
            log.exception("job crashed the agent's handler; it will be reclaimed", extra={"job_id": entry.job_id})
        finally:
            self.live.discard(entry.job_id)  # what a crashed or handed-back attempt left unwritten
            del self.running[entry.entry_id]
            for claimed in running.refill:
                self.start(claimed)
            self.metrics.in_flight.set(len(self.running))
            if not running.refill:
                self.life.slot_free.set()
            self.life.wake_idle.set()

    async def _run(self, running: Running) -> None:
        entry = running.entry
        claimed_at = time.time()
        attempt = await retry("start the job", lambda: self.queue.begin(entry, self.s.max_attempts))
        running.begun = attempt.kind in ("run", "exhausted")
        if attempt.kind == "finished":
            log.info("job already had its reply; settled", extra={"job_id": entry.job_id})
            return
        if attempt.kind == "expired":
            reason = f"the job was not claimed within {contract.JOB_TTL_S} s and expired"
            await self._settle(entry, build_reply(entry.job_id, "expired", error=reason, finished_at=time.time()))
            return
        try:
            job = contract.decode(attempt.raw)
        except JobError as exc:
            reply = build_reply(entry.job_id, "failed", error=f"invalid job: {exc}", finished_at=time.time())
            await self._settle(entry, reply, raw=attempt.raw)
            return
        if attempt.kind == "exhausted":
            reason = attempt.last_error or "the agent running it stopped before it finished"
            error = f"gave up after {attempt.number - 1} attempts: {reason}"
            reply = self._reply(job, attempt, "failed", claimed_at, error=error)
            await self._settle(entry, reply, job=job, raw=attempt.raw)
            return
        await self._generate(entry, job, attempt, claimed_at)

    async def _generate(self, entry: Entry, job: Job, attempt: Attempt, claimed_at: float) -> None:
        started = time.monotonic()
        try:
            completion = await self.backend.complete(
                self.model,
                job,
                job.get("max_tokens", self.s.default_max_tokens),
                on_text=lambda text: self.live.add(job["id"], text),
            )
        except BackendError as exc:
            self.live.discard(job["id"])
            self.metrics.attempt_failures.inc()
            reason = f"attempt {attempt.number} of {self.s.max_attempts}: {exc.reason}"
            if exc.retryable and attempt.number < self.s.max_attempts:
                backoff_ms = int(min(2 ** (attempt.number - 1), RETRY_MAX_S) * 1000)
                log.warning(
                    "attempt failed; job released for a retry",
                    extra={"job_id": job["id"], "error": reason, "retry_in_ms": backoff_ms},
                )
                await retry(
                    "release the job",
                    lambda: self.queue.release(entry, self.claim_timeout_ms - backoff_ms, reason, refund=False),
                )
                return
            reply = self._reply(job, attempt, "failed", claimed_at, error=reason, started=started)
            await self._settle(entry, reply, job=job, raw=attempt.raw)
            return
        reply = self._reply(
            job,
            attempt,
            "done",
            claimed_at,
            started=started,
            output=completion.text,
            model=completion.model,
            usage=completion.usage,
            finish_reason=completion.finish_reason,
            chat=is_chat(job),
            ttft_s=completion.ttft_s,
        )
        await self._settle(entry, reply, job=job, raw=attempt.raw)

    def _reply(
        self,
        job: Job,
        attempt: Attempt,
        status: str,
        claimed_at: float,
        *,
        started: float | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        now = time.time()
        # Monotonic start converted to wall time, so that total_ms is immune to clock steps.
        started_wall = None if started is None else now - (time.monotonic() - started)
        return build_reply(
            job["id"],
            status,
            owner=job["owner"],
            attempts=attempt.number,
            created_at=job["created_at"],
            claimed_at=claimed_at,
            started_at=started_wall,
            finished_at=now,
            shape=self.s.shape or None,
            **fields,
        )

    async def _settle(self, entry: Entry, reply: dict[str, Any], *, job: Job | None = None, raw: str = "") -> None:
        """Store the final reply (retried until S3 takes it), count it, then settle the job in Redis — last, so that
        whoever sees the job settled (``result:<id>``, the dead letter, the ack) also sees its reply and its
        metrics."""
        s3_started = time.monotonic()
        stood = await retry("store the reply in S3", lambda: self.replies.write(reply))
        s3_s = time.monotonic() - s3_started
        if job is not None:
            self.idle.job_finished(time.monotonic(), job["idle_minutes"])
        running = self.running.get(entry.entry_id)
        handled_s = None if running is None else time.monotonic() - running.claimed
        self._record(stood, duplicate=stood is not reply, handled_s=handled_s, s3_s=s3_s)
        status, error = stood["status"], stood.get("error")
        tail = await self.live.take(entry.job_id)
        claim = 1 if running is not None and self.life.may_refill() else 0
        claimed = await retry(
            "settle the job in Redis",
            lambda: self.queue.finish(
                entry, status, stood["timings"]["finished_at"], error, raw, live_tail=tail, claim=claim
            ),
        )
        if not claimed:
            return
        if running is not None and self.life.may_claim():
            running.refill = claimed  # started as this job's task ends, in the slot it frees
            return
        for late in claimed:  # the agent began to stop during the call
            await self.hand_back(late)

    def _record(self, reply: dict[str, Any], *, duplicate: bool, handled_s: float | None, s3_s: float) -> None:
        timings = reply.get("timings") or {}  # a reply stored earlier may be another agent's, of another version
        fields = {
            "job_id": reply["id"],
            "status": reply["status"],
            "attempts": reply.get("attempts"),
            "queued_ms": timings.get("queued_ms"),
            "ttft_ms": timings.get("ttft_ms"),
            "latency_ms": timings.get("total_ms"),
            # Claim → the reply stored, the S3 write included: latency_ms plus the agent's cost.
            "handled_ms": None if handled_s is None else round(handled_s * 1000, 1),
            "s3_ms": round(s3_s * 1000, 1),
        }
        if duplicate:
            log.info("job's reply was already stored by an earlier attempt", extra=fields)
            return
        self.metrics.jobs.labels(reply["status"]).inc()
        for histogram, key, cw_name in (
            (self.metrics.queue_wait, "queued_ms", "QueueWaitMs"),
            (self.metrics.ttft, "ttft_ms", "TimeToFirstTokenMs"),
            (self.metrics.total, "total_ms", "JobLatencyMs"),
        ):
            if timings.get(key) is not None:
                histogram.observe(timings[key] / 1000)
                self.cloudwatch.add(cw_name, timings[key], "Milliseconds")
        level = logging.INFO if reply["status"] == "done" else logging.WARNING
        log.log(level, "job settled", extra={**fields, "error": reply.get("error")})

    async def _write_live(self, texts: dict[str, str]) -> None:
        """Live text is best effort: a Redis hiccup must not fail a job."""
        try:
            await self.queue.append_partial(texts)
        except redis.exceptions.RedisError as exc:
            log.debug("live text not written", extra={"jobs": len(texts), "error": str(exc)})
