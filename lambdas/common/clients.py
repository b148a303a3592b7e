"""AWS clients as the functions build them: short timeouts, few retries, one per container."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Final
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

ROLE_CREDENTIALS: Final[ContextVar[Mapping[str, str] | None]] = ContextVar("tl_role_credentials", default=None)
"""``AWS_*`` credentials for the clients built in this context, over the environment's. Unset on AWS, where Lambda
gives each function its own role through the environment; the local edge, which runs every function in one
process, sets it around each function's call, so that each is held to its own role there too."""


def aws(service: str, *, timeout_s: float = 3, attempts: int = 2, region: str | None = None) -> Any:
    """A boto3 client that fails fast: an HTTP API integration gives up after 30 s, the caller sooner."""
    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"total_max_attempts": attempts, "mode": "standard"},
    )
    role = ROLE_CREDENTIALS.get()
    if role:
        session = boto3.session.Session(
            aws_access_key_id=role["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=role["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=role.get("AWS_SESSION_TOKEN"),
        )
        return session.client(service, config=config, region_name=region)  # type: ignore[call-overload]
    return boto3.client(service, config=config, region_name=region)  # type: ignore[call-overload]


class S3ReadError(OSError):
    """An ``s3://bucket/key`` that is not one, or that cannot be read; the message names it."""


def read_s3(url: str, s3: Any | None = None) -> bytes:
    """The body of the object at ``s3://bucket/key`` (the functions' copies of what the private subnets cannot
    reach: the Redis secrets, the JWKS)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise S3ReadError(f"{url!r} is not an s3://bucket/key URL")
    try:
        return bytes((s3 or aws("s3")).get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))["Body"].read())
    except (ClientError, BotoCoreError) as exc:
        raise S3ReadError(f"cannot read {url}: {exc}") from None
