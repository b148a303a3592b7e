"""The Redis connection of the functions that use the queue (router, queue_health)."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def connect(url: str, timeout_s: float) -> redis.Redis:
    """One retry after a dropped connection (Lambda freezes containers between calls), no long back-off."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
        health_check_interval=30,
    )
