"""AWS and Redis clients as the functions build them: short timeouts, few retries, one per container."""

from __future__ import annotations

from typing import Any

import boto3
import redis
from botocore.config import Config
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def aws(service: str, *, timeout_s: float = 3, attempts: int = 2, region: str | None = None) -> Any:
    """A boto3 client that fails fast: an HTTP API integration gives up after 30 s, the caller sooner."""
    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"total_max_attempts": attempts, "mode": "standard"},
    )
    return boto3.client(service, config=config, region_name=region)  # type: ignore[call-overload]


def redis_client(url: str, timeout_s: float) -> redis.Redis:
    """One retry after a dropped connection (Lambda freezes containers between calls), no long back-off."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
        health_check_interval=30,
    )
