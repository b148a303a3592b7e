"""Lambda entry point of queue_health: ``{"redis": "ok", "latencyMs": n}``, or 503 with the reason."""

from __future__ import annotations

import time
from typing import Any

import redis

from lambdas.common import metrics
from lambdas.common.http import is_http_event, respond
from lambdas.common.logs import log
from lambdas.common.redis_client import connect
from lambdas.common.settings import Settings

_client: tuple[Settings, redis.Redis] | None = None


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


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    global _client  # noqa: PLW0603 (one connection per container)
    if _client is None:
        s = Settings.from_env()
        _client = (s, connect(s.redis_url, max(s.redis_timeout_s, s.health_max_ms / 1000)))
    settings, client = _client
    result = check(client, settings.health_max_ms)
    healthy = result["redis"] == "ok"
    metrics.emit({"QueueHealthy": 1 if healthy else 0})
    metrics.emit({"RedisPingMs": result["latencyMs"]}, unit="Milliseconds")
    if not healthy:
        log("error", "queue unhealthy", **result)
    if is_http_event(event):
        return respond(200 if healthy else 503, result)
    return result


def reset() -> None:
    global _client  # noqa: PLW0603
    _client = None
