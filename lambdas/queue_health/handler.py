"""Lambda entry point of queue_health: ``lambdas.queue_health.handler.handler``.

Runs on a schedule (every 5 minutes, the functions stack's rule) and behind ``GET /queue-health``:

* Redis PING: ``{"redis": "ok", "latencyMs": n}``, or 503 with the reason. In ``node`` mode Redis sleeps with the
  node, so a stopped node answers 200 ``{"redis": "asleep"}`` (no alarm for a node doing its job); a running node
  whose Redis does not answer fails as in ``elasticache`` mode.
* The inbox sweep: a parked request that no node adopted within ``TL_PARK_TTL_S`` gets its ``expired`` reply
  (``jobqueue.inbox``), so that its owner hears of it through ``GET /result/{id}``; slots left by a crash are freed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from botocore.exceptions import BotoCoreError, ClientError

from jobqueue.inbox import Inbox
from lambdas import routes
from lambdas.common import metrics
from lambdas.common.app import Answer, Entry, Event, HttpApp
from lambdas.common.clients import aws
from lambdas.common.http import Request, respond
from lambdas.common.logs import log
from lambdas.common.node import find_node
from lambdas.common.redis_client import connect_queue
from lambdas.common.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


def check(client: redis.Redis, max_ms: int) -> dict[str, Any]:
    """PING once: ``ok``, ``slow`` (over ``max_ms``) or ``fail``, with the latency and any error."""
    started = time.perf_counter()
    try:
        client.ping()
    except redis.RedisError as exc:
        latency = round((time.perf_counter() - started) * 1000, 2)
        return {"redis": "fail", "latencyMs": latency, "error": f"{type(exc).__name__}: {exc}"}
    latency = round((time.perf_counter() - started) * 1000, 2)
    if latency > max_ms:
        return {"redis": "slow", "latencyMs": latency, "error": f"PING took over {max_ms} ms"}
    return {"redis": "ok", "latencyMs": latency}


class QueueHealth(HttpApp):
    function = "queue_health"

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        ec2: EC2Client,
        inbox: Inbox | None,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(settings, None, clock)  # its one route is open: no token to check
        self.redis = client
        self.ec2 = ec2
        self.inbox = inbox

    @classmethod
    def from_env(cls) -> QueueHealth:
        s = Settings.from_env()
        timeout = max(s.redis_timeout_s, s.health_max_ms / 1000)
        inbox = Inbox(aws("s3"), s.reply_bucket) if s.reply_bucket else None
        return cls(s, connect_queue(s, timeout), aws("ec2"), inbox)

    def redis_state(self) -> dict[str, Any]:
        result = check(self.redis, self.s.health_max_ms)
        if result["redis"] == "fail" and self.s.queue_mode == "node":
            try:
                node = find_node(self.ec2, self.s.node_tag)
            except (ClientError, BotoCoreError) as exc:
                result["error"] += f"; node state unknown ({exc})"
                return result
            if node is not None and node.state != "running":
                return {"redis": "asleep", "node": node.state}
        return result

    def sweep(self) -> dict[str, Any]:
        if self.inbox is None:
            return {}
        try:
            expired = self.inbox.expire(self.s.park_ttl_s)
        except (ClientError, BotoCoreError) as exc:
            log("error", "inbox sweep failed", error=str(exc))
            return {"sweep": "fail", "sweepError": str(exc)}
        for job_id in expired:
            log("warning", "parked request expired: no node adopted it", id=job_id, ttlS=self.s.park_ttl_s)
        if expired:
            metrics.emit({"ParkedExpired": len(expired)})
        return {"expired": len(expired)}

    def report(self) -> tuple[bool, dict[str, Any]]:
        result = self.redis_state()
        healthy = result["redis"] in ("ok", "asleep")
        metrics.emit({"QueueHealthy": 1 if healthy else 0})
        if "latencyMs" in result:
            metrics.emit({"RedisPingMs": result["latencyMs"]}, unit="Milliseconds")
        if not healthy:
            log("error", "queue unhealthy", **result)
        return healthy, result

    def serve_open(self, route: routes.Route, req: Request) -> Answer:
        """``GET /queue-health``: only reports (200 or 503)."""
        healthy, result = self.report()
        return respond(200 if healthy else 503, result)

    def event(self, event: Event) -> Answer:
        """The scheduled run: reports, then sweeps the inbox."""
        _, result = self.report()
        return {**result, **self.sweep()}


entry: Entry[QueueHealth] = Entry(lambda context: QueueHealth.from_env())
reset = entry.reset


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    return entry(event, context)
