"""The agent: claims jobs from Redis, runs them on the model server, stores replies, stops the idle node.

Three parts, each change in one place: this thin agent wires the start-up, the loops and the drain; the job
runner (``node_agent.jobs``) lives one job's life; the idle stopper (``node_agent.idle_stop``) decides and makes
the node's stops. What they share — the node's state, the events between loops — is a ``node_agent.life.Life``.
Reading order: ``Agent.run``, then ``JobRunner``, then ``IdleStopper``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Final

import redis.exceptions

from jobqueue import contract
from jobqueue.queue import AsyncJobQueue, Entry
from node_agent import __version__
from node_agent.adoption import ADOPT_EVERY_S, Adopter
from node_agent.aio import AWS_ERRORS, TRANSIENT, Interrupted, retry, stop_tasks, unless_set, wait_event
from node_agent.backend import Backend, BackendNotReady
from node_agent.idle import IdleClock
from node_agent.idle_stop import IdleStopper
from node_agent.instance import Stopper
from node_agent.jobs import JobRunner
from node_agent.life import Life
from node_agent.metrics import LAG_PROBE_S, CloudWatchPublisher, Metrics
from node_agent.replies import ReplyStore
from node_agent.settings import Settings

log = logging.getLogger("node_agent")

CLAIM_BLOCK_MS: Final = 1000
CLOUDWATCH_FLUSH_S: Final = 60.0


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
        self.stopper = stopper
        self.metrics = metrics
        self.cloudwatch = cloudwatch
        self.adopter = adopter
        self.life = Life()
        if settings.shape:
            metrics.shape.labels(settings.shape).set(1)
        self.heartbeat_ttl_s = max(int(settings.heartbeat_s * 3), 1)
        idle = IdleClock(settings.idle_s)
        self.idle = idle
        self.jobs = JobRunner(settings, self.life, queue=queue, backend=backend, replies=replies, metrics=metrics,
                              cloudwatch=cloudwatch, idle=idle)  # fmt: skip
        self.idle_stopper = IdleStopper(settings, self.life, queue=queue, backend=backend, stopper=stopper,
                                        metrics=metrics, cloudwatch=cloudwatch, adopter=adopter, idle=idle,
                                        runner=self.jobs, beat=self._beat)  # fmt: skip

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
                "shape": self.s.shape or None,
                "backend_start_timeout_s": self.s.backend_start_timeout_s,
            },
        )
        # a stop while Redis is away (the node's own Redis restarting, say) ends the agent at once: supervisor
        # would otherwise wait its stopwaitsecs for it and then kill it
        try:
            await unless_set(self.life.shutdown, retry("connect to Redis", self.queue.ensure_group))
        except Interrupted:
            pass
        else:
            await self._serve()
        await self.cloudwatch.flush()
        await self.backend.aclose()
        await self.jobs.replies.aclose()
        log.info("agent stopped")

    async def _serve(self) -> None:
        """From Redis answering to the shutdown: adopt, wait for the model server, claim and run, drain."""
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        lag = asyncio.create_task(self._lag_loop(), name="loop-lag")
        await self._adopt()  # requests parked while the node slept join the queue before anything is claimed
        if await self._wait_backend():
            self.life.state = "ready"
            self.idle.observe(time.monotonic(), busy=False)
            claim = asyncio.create_task(self._claim_loop(), name="claim")
            others = [
                asyncio.create_task(self._refresh_loop(), name="refresh"),
                asyncio.create_task(self.idle_stopper.loop(), name="idle"),
                asyncio.create_task(self._cloudwatch_loop(), name="cloudwatch"),
                asyncio.create_task(self._adopt_loop(), name="adopt"),
                asyncio.create_task(self.jobs.live.loop(), name="live-text"),
            ]
            await self.life.shutdown.wait()
            await self._drain(claim, others)
        if self.life.state == "stopping":
            await self._park_back()
        await stop_tasks([heartbeat, lag])
        with contextlib.suppress(*TRANSIENT):
            await self.queue.clear_heartbeat()

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("shutdown requested", extra={"signal": sig.name, "in_flight": len(self.jobs.running)})
        if self.life.state != "stopping":  # once the agent decided to stop the node, it says so to the end
            self.life.state = "draining"
        self.life.shutdown.set()
        self.life.slot_free.set()

    async def _wait_backend(self) -> bool:
        """Wait for the model server; a node whose backend never comes up stops itself rather than idle on.
        False when the agent is told to stop first."""
        while True:
            try:
                models = await unless_set(self.life.shutdown, self.backend.wait_ready(self.s.backend_start_timeout_s))
            except Interrupted:
                return False
            except BackendNotReady as exc:
                log.error("backend never became ready; stopping the node", extra={"error": str(exc)})
                self.life.state = "stopping"
                await self._beat()
                if not await self.idle_stopper.stop("backend not ready", str(exc)):
                    self.life.state = "starting"
                continue
            self.jobs.model = self.jobs.model or models[0]
            self.metrics.backend_up.set(1)
            log.info("agent ready", extra={"model": self.jobs.model})
            return True

    async def _drain(self, claim: asyncio.Task[None], others: list[asyncio.Task[None]]) -> None:
        """Stop claiming, give in-flight jobs the grace period, hand the rest back to the queue."""
        await asyncio.wait({claim}, timeout=CLAIM_BLOCK_MS / 1000 + 1)  # the claim loop ends by itself
        tasks = self.jobs.tasks()
        if tasks:
            log.info(
                "waiting for in-flight jobs",
                extra={"in_flight": len(tasks), "grace_s": self.s.shutdown_grace_s},
            )
            _, late = await asyncio.wait(tasks, timeout=self.s.shutdown_grace_s)
            if late:
                await stop_tasks(list(late), timeout_s=10.0)
        await stop_tasks([claim, *others])

    # ---------------------------------------------------------------- loops

    async def _claim_loop(self) -> None:
        """Claim up to the free slots: first this consumer's own leftovers, then expired claims, then new. (A busy
        agent's finished job claims the next for its slot itself, between sweeps: ``Life.may_refill``.)"""
        life, running = self.life, self.jobs.running
        first = True
        while not life.shutdown.is_set():
            free = self.s.max_concurrency - len(running)
            if free <= 0 or life.claiming_paused():
                life.slot_free.clear()
                await wait_event(life.slot_free, 1.0)
                continue
            try:
                entries: list[Entry] = []
                if first:
                    entries, first = await self.queue.own_pending(free), False
                elif life.sweep_due():
                    entries = await self.queue.reclaim(free, self.jobs.claim_timeout_ms)
                    life.swept_at = time.monotonic()
                if not entries:
                    entries = await self.queue.claim_new(free, CLAIM_BLOCK_MS)
            except redis.exceptions.RedisError as exc:
                log.warning("cannot claim jobs; retrying", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
                life.adopt_now.set()  # Redis may come back empty: requests parked meanwhile are in S3
                continue
            for entry in entries:
                if entry.entry_id in running:
                    continue  # reclaimed our own running entry (its idle time ran out during a Redis outage)
                # (a claim that was blocked in Redis when the agent decided to stop returns here: it goes back too)
                if not life.may_claim() or len(running) >= self.s.max_concurrency:
                    await self.jobs.hand_back(entry)
                    continue
                self.jobs.start(entry)
            if entries:
                life.wake_idle.set()

    async def _refresh_loop(self) -> None:
        running = self.jobs.running
        while running or not self.life.shutdown.is_set():
            await asyncio.sleep(self.s.claim_timeout_s / 3)
            entries = [r.entry for r in running.values()]
            try:
                lost = await self.queue.refresh(entries)
            except redis.exceptions.RedisError as exc:
                log.warning("cannot refresh claims", extra={"error": str(exc)})
                continue
            for entry_id in lost:
                job = running.get(entry_id)
                if job is not None:
                    # Another agent runs it too; S3's write-once rule keeps one reply, so let both finish.
                    log.warning("claim taken over by another agent", extra={"job_id": job.entry.job_id})

    async def _lag_loop(self) -> None:
        """The event loop's lag: a job's work that blocks the loop (parsing, a synchronous call) shows here first."""
        loop = asyncio.get_running_loop()
        while True:
            asleep = loop.time()
            await asyncio.sleep(LAG_PROBE_S)
            self.metrics.loop_lag.observe(max(loop.time() - asleep - LAG_PROBE_S, 0.0))

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._beat()
            await asyncio.sleep(self.s.heartbeat_s)

    async def _beat(self) -> None:
        state = self.life.state
        if state in ("ready", "busy"):
            state = "busy" if self.jobs.running else "ready"
        remaining = self.idle.remaining(time.monotonic())
        payload = {
            "instance_id": self.stopper.instance_id,
            "state": state,
            "in_flight": len(self.jobs.running),
            "max_concurrency": self.s.max_concurrency,
            "model": self.jobs.model,
            "idle_stop_in_s": None if remaining is None else round(remaining, 1),
            "at": time.time(),
            "version": __version__,
            "shape": self.s.shape or None,
            "instance_type": self.s.instance_type or None,
        }
        try:
            await self.queue.publish_heartbeat(payload, self.heartbeat_ttl_s)
        except redis.exceptions.RedisError as exc:
            log.warning("heartbeat not written", extra={"error": str(exc)})

    async def _adopt(self) -> None:
        """Adopt parked requests; S3 trouble is logged and tried again at the next pass."""
        try:
            adopted = await self.adopter.adopt()
        except (*AWS_ERRORS, *TRANSIENT, redis.exceptions.RedisError) as exc:
            log.warning("parked requests not adopted; trying again later", extra={"error": str(exc)})
            return
        if adopted:
            log.info("parked requests adopted", extra={"adopted": adopted})
            self.life.wake_idle.set()

    async def _adopt_loop(self) -> None:
        """Every ADOPT_EVERY_S, and at once when Redis came back or a stop was called off."""
        life = self.life
        while not life.shutdown.is_set():
            await wait_event(life.adopt_now, ADOPT_EVERY_S)
            life.adopt_now.clear()
            if life.state != "stopping" and not life.shutdown.is_set():
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
        while not self.life.shutdown.is_set():
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
