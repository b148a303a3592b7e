"""The Redis connection of the functions that use the queue (router, queue_health)."""

from __future__ import annotations

import json
import tempfile
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from botocore.exceptions import BotoCoreError, ClientError
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from lambdas.common.clients import aws
from lambdas.common.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

USER: Final = "router"
"""The functions' ACL user on the node's Redis (jobqueue/acl.py)."""


class SecretsError(RuntimeError):
    """The Redis secrets named by TL_REDIS_SECRETS cannot be read; the message says which and why."""


def read_object(url: str, s3: S3Client) -> bytes:
    """The body of ``s3://bucket/key``; a SecretsError that names it when it is not there or not readable."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise SecretsError(f"{url!r} is not an s3://bucket/key URL")
    try:
        return s3.get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        raise SecretsError(f"cannot read {url}: {exc}") from None


def with_secrets(url: str, secrets_url: str, s3: S3Client) -> str:
    """The Redis URL with the functions' ACL user, its password and the pinned certificate of the node's Redis.

    They are read once per container from ``secrets_url``, an S3 object (``{"password": …, "tls_cert": …}``) that
    the ``aws_stack`` role copies from SSM, where they are kept. S3, not SSM: the functions run in the private
    subnets, which have no NAT gateway; S3 is reached through the VPC's gateway endpoint, while SSM documents no
    IPv6 endpoint that the egress-only gateway could reach (README, "What the functions reach")."""
    try:
        secrets = json.loads(read_object(secrets_url, s3))
        password, cert = str(secrets["password"]), str(secrets["tls_cert"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SecretsError(f'{secrets_url} is not {{"password": …, "tls_cert": …}}: {exc!r}') from None
    with tempfile.NamedTemporaryFile("w", suffix=".pem", prefix="tl-redis-ca-", delete=False) as ca:
        ca.write(cert)
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{USER}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
    query = "&".join(q for q in (parts.query, f"ssl_ca_certs={quote(ca.name)}", "ssl_cert_reqs=required") if q)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


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


def connect_queue(s: Settings, timeout_s: float | None = None) -> redis.Redis:
    """The queue's client as the settings say: the URL, with the node Redis's user and certificate when
    ``TL_REDIS_SECRETS`` names them."""
    url = with_secrets(s.redis_url, s.redis_secrets, aws("s3")) if s.redis_secrets else s.redis_url
    timeout = s.redis_timeout_s if timeout_s is None else timeout_s
    return connect(url, timeout, min(s.redis_connect_timeout_s, timeout))
