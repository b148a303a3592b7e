"""AWS clients as the functions build them: short timeouts, few retries, one per container."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config


def aws(service: str, *, timeout_s: float = 3, attempts: int = 2, region: str | None = None) -> Any:
    """A boto3 client that fails fast: an HTTP API integration gives up after 30 s, the caller sooner."""
    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"total_max_attempts": attempts, "mode": "standard"},
    )
    return boto3.client(service, config=config, region_name=region)  # type: ignore[call-overload]
