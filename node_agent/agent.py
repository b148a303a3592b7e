"""The agent: claims jobs from Redis, runs them on the model server, stores replies, stops the idle node.

Reading order: ``Agent.run`` (start-up, the loops, shutdown), then ``_run_job`` (one job's life), then the
loops. Decisions that need no I/O live in ``idle`` and ``replies``; this module only wires them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import redis.exceptions
from botocore.exceptions import BotoCoreError, ClientError

from jobqueue import contract
from jobqueue.contract import Job, JobError, build_reply
from jobqueue.queue import AsyncJobQueue, Attempt, Entry
from node_agent import __version__
from node_agent.adoption import ADOPT_EVERY_S, Adopter
from node_agent.backend import Backend, BackendError, BackendNotReady
from node_agent.idle import IdleClock
from node_agent.instance import InstanceError, Stopper
from node_agent.metrics import CloudWatchPublisher, Metrics
from node_agent.replies import PartialText, ReplyStore, ReplyWriteError
from node_agent.settings import Settings

log = logging.getLogger("node_agent")
T = TypeVar("T")

RECLAIM_EVERY_S: Final = 1.0
CLAIM_BLOCK_MS: Final = 1000
CLOUDWATCH_FLUSH_S: Final = 60.0
RETRY_MAX_S: Final = 30.0
STOP_CLAIM_PAUSE_S: Final = 120.0
TRANSIENT: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ReplyWriteError)
AWS_ERRORS: Final = (ClientError, BotoCoreError)


async def stop_tasks(tasks: list[asyncio.Task[None]], timeout_s: float = 5.0) -> None:
    """Cancel background loops and wait for them, boundedly. The loops also end on the shutdown flag, so a
    client library that swallows a cancellation (redis-py 8.0/8.1's asyncio client did) cannot keep the agent
    alive."""
    for task in tasks:
        task.cancel()
    _, stuck = await asyncio.wait(tasks, timeout=timeout_s)
    for task in stuck:
        log.warning("background task did not stop; leaving it", extra={"task": task.get_name()})


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for an event at most ``timeout_s``. ``asyncio.timeout`` rather than ``asyncio.wait_for``: on
    Python 3.11, ``wait_for`` may drop a cancellation that arrives just as the awaited future completes."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


@dataclass
class Running:
    entry: Entry
    begun: bool = False
    claimed: float = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Agent:
    def __init__(
        self,
        settings: Settings,
        *,
        queue: AsyncJobQueue,
        backend: Backend,
        replies: ReplyStore,
        stopper: Stopper,
        metrics: Metrics,
        cloudwatch: CloudWatchPublisher,
        adopter: Adopter,
    ) -> None:
        self.s = settings
        self.queue = queue
        self.backend = backend
        self.replies = replies
        self.stopper = stopper
        self.metrics = metrics
        self.cloudwatch = cloudwatch
        self.adopter = adopter
        self.state = "starting"
        self.model = settings.model
        self._running: dict[str, Running] = {}
        self._idle = IdleClock(settings.idle_s)
        self._shutdown = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._wake_idle = asyncio.Event()
        self._adopt_now = asyncio.Event()
        self._claim_paused_until = 0.0

    # ---------------------------------------------------------------- life cycle

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        log.info(
            "agent starting",
            extra={
                "version": __version__,
                "consumer": self.queue.consumer,
                "concurrency": self.s.max_concurrency,
            },
        )
        await self._retry("connect to Redis", self.queue.ensure_group)
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        await self._adopt()  # requests parked while the node slept join the queue before anything is claimed
        if await self._wait_backend():
            self.state = "ready"
            self._idle.observe(time.monotonic(), busy=False)
            loops = [
                asyncio.create_task(self._claim_loop(), name="claim"),
                asyncio.create_task(self._refresh_loop(), name="refresh"),
                asyncio.create_task(self._idle_loop(), name="idle"),
                asyncio.create_task(self._cloudwatch_loop(), name="cloudwatch"),
                asyncio.create_task(self._adopt_loop(), name="adopt"),
            ]
            await self._shutdown.wait()
            await self._drain(loops)
        if self.state == "stopping":
            await self._park_back()
        await stop_tasks([heartbeat])
        with contextlib.suppress(*TRANSIENT):
            await self.queue.clear_heartbeat()
        await self.cloudwatch.flush()
        await self.backend.aclose()
        log.info("agent stopped")

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("shutdown requested", extra={"signal": sig.name, "in_flight": len(self._running)})
        if self.state != "stopping":  # once the agent decided to stop the node, it says so to the end
            self.state = "draining"
        self._shutdown.set()
        self._slot_free.set()

    async def _wait_backend(self) -> bool:
        """Wait for the model server; a node whose backend never comes up stops itself rather than idle on."""
        waiter = asyncio.create_task(self.backend.wait_ready(self.s.backend_start_timeout_s))
        stop = asyncio.create_task(self._shutdown.wait())
        while True:
            await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                waiter.cancel()
                return False
            try:
                models = waiter.result()
            except BackendNotReady as exc:
                log.error("backend never became ready; stopping the node", extra={"error": str(exc)})
                self.state = "stopping"
                await self._beat()
                if not await self._stop_instance(f"backend not ready: {exc}"):
                    self.state = "starting"
                waiter = asyncio.create_task(self.backend.wait_ready(self.s.backend_start_timeout_s))
                continue
            stop.cancel()
            self.model = self.model or models[0]
            self.metrics.backend_up.set(1)
            log.info("agent ready", extra={"model": self.model})
            return True

    async def _drain(self, loops: list[asyncio.Task[None]]) -> None:
        """Stop claiming, give in-flight jobs the grace period, hand the rest back to the queue."""
        await asyncio.wait({loops[0]}, timeout=CLAIM_BLOCK_MS / 1000 + 1)  # the claim loop ends by itself
        tasks = [r.task for r in self._running.values() if r.task is not None]
        if tasks:
            log.info(
                "waiting for in-flight jobs",
                extra={"in_flight": len(tasks), "grace_s": self.s.shutdown_grace_s},
            )
            _, late = await asyncio.wait(tasks, timeout=self.s.shutdown_grace_s)
            if late:
                await stop_tasks(list(late), timeout_s=10.0)
        await stop_tasks(loops)

    # ---------------------------------------------------------------- one job

    def _start(self, entry: Entry) -> None:
        running = Running(entry)
        self._running[entry.entry_id] = running
        self.metrics.in_flight.set(len(self._running))
        running.task = asyncio.create_task(self._job_task(running), name=f"job-{entry.job_id}")

    async def _job_task(self, running: Running) -> None:
        entry = running.entry
        try:
            await self._run_job(running)
        except asyncio.CancelledError:
            # Shutdown grace ran out: give the job back at once, without counting this attempt.
            with contextlib.suppress(*TRANSIENT):
                await self.queue.release(entry, self._claim_timeout_ms, "", refund=running.begun)
            log.warning("job handed back at shutdown", extra={"job_id": entry.job_id})
            raise
        except Exception:
            # A bug, not a job failure: leave the claim to expire so the job is retried, and keep the agent up.
            log.exception("job crashed the agent's handler; it will be reclaimed", extra={"job_id": entry.job_id})
        finally:
            del self._running[entry.entry_id]
            self.metrics.in_flight.set(len(self._running))
            self._slot_free.set()
            self._wake_idle.set()

    async def _run_job(self, running: Running) -> None:
        entry = running.entry
        claimed_at = time.time()
        attempt = await self._retry("start the job", lambda: self.queue.begin(entry, self.s.max_attempts))
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
            reply = self._reply(
                job,
                attempt,
                "failed",
                claimed_at,
                error=f"gave up after {attempt.number - 1} attempts: {reason}",
            )
            await self._settle(entry, reply, job=job, raw=attempt.raw)
            return
        await self._generate(entry, job, attempt, claimed_at)

    async def _generate(self, entry: Entry, job: Job, attempt: Attempt, claimed_at: float) -> None:
        partial = PartialText(lambda fields: self._partial(job["id"], fields))
        started = time.monotonic()
        try:
            completion = await self.backend.complete(
                self.model,
                job["prompt"],
                job.get("max_tokens", self.s.default_max_tokens),
                job.get("temperature"),
                on_text=partial.add,
            )
            await partial.flush()
        except BackendError as exc:
            self.metrics.attempt_failures.inc()
            reason = f"attempt {attempt.number} of {self.s.max_attempts}: {exc.reason}"
            if exc.retryable and attempt.number < self.s.max_attempts:
                backoff_ms = int(min(2 ** (attempt.number - 1), RETRY_MAX_S) * 1000)
                log.warning(
                    "attempt failed; job released for a retry",
                    extra={"job_id": job["id"], "error": reason, "retry_in_ms": backoff_ms},
                )
                await self._retry(
                    "release the job",
                    lambda: self.queue.release(entry, self._claim_timeout_ms - backoff_ms, reason, refund=False),
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
            **fields,
        )

    async def _settle(self, entry: Entry, reply: dict[str, Any], *, job: Job | None = None, raw: str = "") -> None:
        """Store the final reply (retried until S3 takes it), then settle the job in Redis."""
        s3_started = time.monotonic()
        stood = await self._retry("store the reply in S3", lambda: self.replies.write(reply))
        s3_s = time.monotonic() - s3_started
        status, error = stood["status"], stood.get("error")
        await self._retry(
            "settle the job in Redis",
            lambda: self.queue.finish(entry, status, stood["timings"]["finished_at"], error, raw),
        )
        if job is not None:
            self._idle.job_finished(time.monotonic(), job["idle_minutes"])
        running = self._running.get(entry.entry_id)
        handled_s = None if running is None else time.monotonic() - running.claimed
        self._record(stood, duplicate=stood is not reply, handled_s=handled_s, s3_s=s3_s)

    def _record(self, reply: dict[str, Any], *, duplicate: bool, handled_s: float | None, s3_s: float) -> None:
        timings = reply["timings"]
        fields = {
            "job_id": reply["id"],
            "status": reply["status"],
            "attempts": reply["attempts"],
            "queued_ms": timings["queued_ms"],
            "ttft_ms": timings["ttft_ms"],
            "latency_ms": timings["total_ms"],
            # Claim → settled, including the S3 write and the Redis bookkeeping: latency_ms plus the agent's cost.
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
            if timings[key] is not None:
                histogram.observe(timings[key] / 1000)
                self.cloudwatch.add(cw_name, timings[key], "Milliseconds")
        level = logging.INFO if reply["status"] == "done" else logging.WARNING
        log.log(level, "job settled", extra={**fields, "error": reply.get("error")})

    async def _partial(self, job_id: str, fields: dict[str, str]) -> None:
        """Live text is best effort: a Redis hiccup must not fail the job."""
        try:
            await self.queue.append_partial(job_id, fields)
        except redis.exceptions.RedisError as exc:
            log.debug("partial text not written", extra={"job_id": job_id, "error": str(exc)})

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Retry a transient failure (Redis or S3 away) with capped exponential back-off, until it works."""
        delay = 0.25
        while True:
            try:
                return await call()
            except TRANSIENT as exc:
                log.warning(f"cannot {what}; retrying", extra={"error": str(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    @property
    def _heartbeat_ttl_s(self) -> int:
        return max(int(self.s.heartbeat_s * 3), 1)

    @property
    def _claim_timeout_ms(self) -> int:
        return int(self.s.claim_timeout_s * 1000)

    # ---------------------------------------------------------------- loops

    async def _claim_loop(self) -> None:
        """Claim up to the free slots: first this consumer's own leftovers, then expired claims, then new."""
        first, last_sweep = True, 0.0
        while not self._shutdown.is_set():
            free = self.s.max_concurrency - len(self._running)
            if free <= 0 or time.monotonic() < self._claim_paused_until:
                self._slot_free.clear()
                await wait_event(self._slot_free, 1.0)
                continue
            try:
                entries: list[Entry] = []
                if first:
                    entries, first = await self.queue.own_pending(free), False
                elif time.monotonic() - last_sweep >= RECLAIM_EVERY_S:
                    entries, last_sweep = (
                        await self.queue.reclaim(free, self._claim_timeout_ms),
                        time.monotonic(),
                    )
                if not entries:
                    entries = await self.queue.claim_new(free, CLAIM_BLOCK_MS)
            except redis.exceptions.RedisError as exc:
                log.warning("cannot claim jobs; retrying", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
                self._adopt_now.set()  # Redis may come back empty: requests parked meanwhile are in S3
                continue
            for entry in entries:
                if entry.entry_id in self._running:
                    continue  # reclaimed our own running entry (its idle time ran out during a Redis outage)
                # (a claim that was blocked in Redis when the agent decided to stop returns here: it goes back too)
                paused = time.monotonic() < self._claim_paused_until
                if self._shutdown.is_set() or paused or len(self._running) >= self.s.max_concurrency:
                    with contextlib.suppress(*TRANSIENT):
                        await self.queue.release(entry, self._claim_timeout_ms, "", refund=False)
                    continue
                self._start(entry)
            if entries:
                self._wake_idle.set()

    async def _refresh_loop(self) -> None:
        while self._running or not self._shutdown.is_set():
            await asyncio.sleep(self.s.claim_timeout_s / 3)
            entries = [r.entry for r in self._running.values()]
            try:
                lost = await self.queue.refresh(entries)
            except redis.exceptions.RedisError as exc:
                log.warning("cannot refresh claims", extra={"error": str(exc)})
                continue
            for entry_id in lost:
                running = self._running.get(entry_id)
                if running is not None:
                    # Another agent runs it too; S3's write-once rule keeps one reply, so let both finish.
                    log.warning("claim taken over by another agent", extra={"job_id": running.entry.job_id})

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._beat()
            await asyncio.sleep(self.s.heartbeat_s)

    async def _beat(self) -> None:
        state = self.state
        if state in ("ready", "busy"):
            state = "busy" if self._running else "ready"
        remaining = self._idle.remaining(time.monotonic())
        payload = {
            "instance_id": self.stopper.instance_id,
            "state": state,
            "in_flight": len(self._running),
            "max_concurrency": self.s.max_concurrency,
            "model": self.model,
            "idle_stop_in_s": None if remaining is None else round(remaining, 1),
            "at": time.time(),
            "version": __version__,
        }
        try:
            await self.queue.publish_heartbeat(payload, self._heartbeat_ttl_s)
        except redis.exceptions.RedisError as exc:
            log.warning("heartbeat not written", extra={"error": str(exc)})

    async def _busy(self) -> str | None:
        """Why the node is not idle, or None when it is. Unknown queue state counts as busy."""
        if self._running:
            return f"{len(self._running)} job(s) in flight"
        try:
            depth = await self.queue.depth()
        except redis.exceptions.RedisError as exc:
            return f"queue unknown ({exc})"
        self.metrics.queue_depth.set(depth)
        if depth:
            return f"{depth} job(s) queued"
        load = await self.backend.load()
        if load is not None and load.busy:
            return f"backend has {load.running} running and {load.waiting} waiting request(s)"
        return None

    async def _idle_loop(self) -> None:
        while not self._shutdown.is_set():
            busy = await self._busy()
            now = time.monotonic()
            self._idle.observe(now, busy=busy is not None)
            remaining = self._idle.remaining(now)
            self.metrics.idle_stop_in.set(-1 if remaining is None else remaining)
            if remaining == 0:
                await self._idle_stop()
                continue
            timeout = self.s.idle_poll_s if remaining is None else min(self.s.idle_poll_s, remaining)
            self._wake_idle.clear()
            await wait_event(self._wake_idle, timeout)

    async def _idle_stop(self) -> None:
        """Stop the idle node. Once decided, the heartbeat says ``stopping`` and never ``ready`` or ``busy`` again:
        the router parks what comes in meanwhile in S3, jobs that slipped into the queue are parked back at
        shutdown, and the state-change event starts the node again for them."""
        idle_since = self._idle.idle_since or time.monotonic()
        idle_for = time.monotonic() - idle_since
        try:
            parked = await self.adopter.waiting()
        except AWS_ERRORS as exc:
            parked = True  # unknown is busy: never stop a node that may have requests waiting
            log.warning("cannot look for parked requests; not stopping", extra={"error": str(exc)})
        if parked:
            self._idle.observe(time.monotonic(), busy=True)
            self._adopt_now.set()
            return
        self.state = "stopping"
        # From here the node may go away at any moment: claim nothing, so that what slips into the queue is parked
        # back at shutdown rather than cut off mid-run.
        self._claim_paused_until = time.monotonic() + STOP_CLAIM_PAUSE_S
        await self._beat()
        stopped = await self._stop_instance(f"idle for {idle_for:.1f} s with no job, empty queue, idle backend")
        if stopped and self.s.stop_mode == "stop":
            # The OS will SIGTERM us shortly; not forever, though, if the stop never comes.
            self._claim_paused_until = time.monotonic() + STOP_CLAIM_PAUSE_S
            if await wait_event(self._shutdown, STOP_CLAIM_PAUSE_S):
                return
            log.warning("the instance did not stop; serving again", extra={"waited_s": STOP_CLAIM_PAUSE_S})
        self._claim_paused_until = 0.0
        self.state = "ready"
        self._idle.restart(time.monotonic())
        self._adopt_now.set()  # what was parked while the agent said `stopping`

    async def _stop_instance(self, reason: str) -> bool:
        self.metrics.auto_stops.inc()
        self.cloudwatch.add("AutoStops", 1, "Count")
        await self.cloudwatch.flush()
        try:
            await self.stopper.stop(reason)
        except InstanceError as exc:
            log.error("idle stop failed", extra={"error": str(exc)})
            return False
        return True

    async def _adopt(self) -> None:
        """Adopt parked requests; S3 trouble is logged and tried again at the next pass."""
        try:
            adopted = await self.adopter.adopt()
        except (*AWS_ERRORS, *TRANSIENT, redis.exceptions.RedisError) as exc:
            log.warning("parked requests not adopted; trying again later", extra={"error": str(exc)})
            return
        if adopted:
            log.info("parked requests adopted", extra={"adopted": adopted})
            self._wake_idle.set()

    async def _adopt_loop(self) -> None:
        """Every ADOPT_EVERY_S, and at once when Redis came back or a stop was called off."""
        while not self._shutdown.is_set():
            await wait_event(self._adopt_now, ADOPT_EVERY_S)
            self._adopt_now.clear()
            if self.state != "stopping" and not self._shutdown.is_set():
                await self._adopt()

    async def _park_back(self) -> None:
        """The node stops: what is still queued goes to S3, where the router sees it and starts the node again."""
        try:
            parked = await self.adopter.park_back(contract.MAX_QUEUE_LENGTH)
        except (*AWS_ERRORS, *TRANSIENT, redis.exceptions.RedisError) as exc:
            log.error("queued jobs not parked back; they wait in Redis for the next start", extra={"error": str(exc)})
            return
        if parked:
            log.info("queued jobs parked back in S3 as the node stops", extra={"parked": parked})

    async def _cloudwatch_loop(self) -> None:
        await self._sample_for_cloudwatch()  # at once: the dashboard has the node's figures from its boot on
        while not self._shutdown.is_set():
            await asyncio.sleep(CLOUDWATCH_FLUSH_S)
            await self._sample_for_cloudwatch()
            await self.cloudwatch.flush()

    async def _sample_for_cloudwatch(self) -> None:
        """The gauges the dashboard and the alarms read: GPU and VRAM, the queue's depth, Redis's memory."""
        if self.metrics.gpu is not None:
            try:
                self.metrics.gpu.publish(self.cloudwatch)
            except Exception as exc:  # NVML errors (a GPU fallen off the bus) must not stop the loop
                log.warning("GPU metrics not read", extra={"error": f"{type(exc).__name__}: {exc}"})
        try:
            depth = await self.queue.depth()
            memory = await self.queue.memory_percent()
        except redis.exceptions.RedisError as exc:
            log.warning("queue gauges not read", extra={"error": str(exc)})
            return
        self.cloudwatch.add("QueueDepth", depth, "Count")
        if memory is not None:  # the node's own Redis (maxmemory set by the queue_redis role)
            self.cloudwatch.add("RedisMemoryPercent", memory, "Percent")
