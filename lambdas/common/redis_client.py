"""The Redis connection of the functions that use the queue (router, queue_health)."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def connect(url: str, timeout_s: float, connect_timeout_s: float | None = None) -> redis.Redis:
    """One retry after a dropped connection (Lambda freezes containers between calls), no long back-off.

    A connect that times out is not retried: in ``node`` mode that is a sleeping node, and the router parks the
    job after one ``connect_timeout_s`` instead of two."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s if connect_timeout_s is None else connect_timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1, supported_errors=(redis.ConnectionError,)),
        health_check_interval=30,
    )
