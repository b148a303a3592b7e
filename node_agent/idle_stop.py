"""The idle stopper: is the node busy, the idle loop, and the node's stop (idle, or a model server that never came
up). The decision on the clock is ``node_agent.idle.IdleClock``; this part feeds it and acts on it.

A stop is counted (``tl_auto_stops`` / ``AutoStops`` for an idle stop, ``tl_backend_not_ready_stops`` /
``BackendNotReadyStops`` for a model server that never answered) only once StopInstances was called: a dry run
or a refused call counts nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, Literal

import redis.exceptions

from jobqueue.queue import AsyncJobQueue
from node_agent.adoption import Adopter
from node_agent.aio import AWS_ERRORS, wait_event
from node_agent.backend import Backend
from node_agent.idle import IdleClock
from node_agent.instance import InstanceError, Stopper
from node_agent.jobs import JobRunner
from node_agent.life import Life
from node_agent.metrics import CloudWatchPublisher, Metrics
from node_agent.settings import Settings

log = logging.getLogger("node_agent")

STOP_CLAIM_PAUSE_S: Final = 120.0
StopKind = Literal["idle", "backend not ready"]


class IdleStopper:
    def __init__(
        self,
        settings: Settings,
        life: Life,
        *,
        queue: AsyncJobQueue,
        backend: Backend,
        stopper: Stopper,
        metrics: Metrics,
        cloudwatch: CloudWatchPublisher,
        adopter: Adopter,
        idle: IdleClock,
        runner: JobRunner,
        beat: Callable[[], Awaitable[None]],
    ) -> None:
        self.s = settings
        self.life = life
        self.queue = queue
        self.backend = backend
        self.stopper = stopper
        self.metrics = metrics
        self.cloudwatch = cloudwatch
        self.adopter = adopter
        self.idle = idle
        self.runner = runner
        self._beat = beat
        """Publish the heartbeat now (the agent's): the router must see ``stopping`` before the stop call."""

    async def busy(self) -> str | None:
        """Why the node is not idle, or None when it is. Unknown queue state counts as busy."""
        if self.runner.running:
            return f"{len(self.runner.running)} job(s) in flight"
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

    async def loop(self) -> None:
        while not self.life.shutdown.is_set():
            busy = await self.busy()
            now = time.monotonic()
            self.idle.observe(now, busy=busy is not None)
            remaining = self.idle.remaining(now)
            self.metrics.idle_stop_in.set(-1 if remaining is None else remaining)
            if remaining == 0:
                await self._idle_stop()
                continue
            timeout = self.s.idle_poll_s if remaining is None else min(self.s.idle_poll_s, remaining)
            self.life.wake_idle.clear()
            await wait_event(self.life.wake_idle, timeout)

    async def _idle_stop(self) -> None:
        """Stop the idle node. Once decided, the heartbeat says ``stopping`` and never ``ready`` or ``busy`` again:
        the router parks what comes in meanwhile in S3, jobs that slipped into the queue are parked back at
        shutdown, and the state-change event starts the node again for them."""
        idle_since = self.idle.idle_since or time.monotonic()
        idle_for = time.monotonic() - idle_since
        try:
            parked = await self.adopter.waiting()
        except AWS_ERRORS as exc:
            parked = True  # unknown is busy: never stop a node that may have requests waiting
            log.warning("cannot look for parked requests; not stopping", extra={"error": str(exc)})
        if parked:
            self.idle.observe(time.monotonic(), busy=True)
            self.life.adopt_now.set()
            return
        self.life.state = "stopping"
        # From here the node may go away at any moment: claim nothing, so that what slips into the queue is parked
        # back at shutdown rather than cut off mid-run.
        self.life.claim_paused_until = time.monotonic() + STOP_CLAIM_PAUSE_S
        await self._beat()
        stopped = await self.stop("idle", f"idle for {idle_for:.1f} s with no job, empty queue, idle backend")
        if stopped and self.s.stop_mode == "stop":
            # The OS will SIGTERM us shortly; not forever, though, if the stop never comes.
            self.life.claim_paused_until = time.monotonic() + STOP_CLAIM_PAUSE_S
            if await wait_event(self.life.shutdown, STOP_CLAIM_PAUSE_S):
                return
            log.warning("the instance did not stop; serving again", extra={"waited_s": STOP_CLAIM_PAUSE_S})
        self.life.claim_paused_until = 0.0
        self.life.state = "ready"
        self.idle.restart(time.monotonic())
        self.life.adopt_now.set()  # what was parked while the agent said `stopping`

    async def stop(self, kind: StopKind, reason: str) -> bool:
        """Stop the instance; False when the call failed (logged). Counted once StopInstances was called."""
        try:
            called = await self.stopper.stop(kind, reason)
        except InstanceError as exc:
            log.error(f"{kind} stop failed", extra={"error": str(exc)})
            return False
        if called:
            counter, name = ((self.metrics.auto_stops, "AutoStops") if kind == "idle"
                             else (self.metrics.backend_stops, "BackendNotReadyStops"))  # fmt: skip
            counter.inc()
            self.cloudwatch.add(name, 1, "Count")
            await self.cloudwatch.flush()  # now: the instance is going away
        return True
