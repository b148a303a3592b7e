"""The Redis connection of the functions that use the queue (router, queue_health)."""

from __future__ import annotations

import json
import tempfile
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from lambdas.common.clients import S3ReadError, aws, read_s3
from lambdas.common.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

USER: Final = "router"
"""The functions' ACL user on the node's Redis (jobqueue/acl.py)."""


class SecretsError(RuntimeError):
    """The Redis secrets named by TL_REDIS_SECRETS cannot be read; the message says which and why."""


def with_secrets(url: str, secrets_url: str, s3: S3Client) -> str:
    """The Redis URL with the functions' ACL user, its password and the pinned certificate of the node's Redis.

    They are read once per container from ``secrets_url``, an S3 object (``{"password": …, "tls_cert": …}``) that
    the ``aws_stack`` role copies from SSM, where they are kept. S3, not SSM: the functions run in the private
    subnets, which have no NAT gateway; S3 is reached through the VPC's gateway endpoint, while SSM documents no
    IPv6 endpoint that the egress-only gateway could reach (docs/aws.md, "What the functions reach")."""
    try:
        body = read_s3(secrets_url, s3)
    except S3ReadError as exc:
        raise SecretsError(str(exc)) from None
    try:
        secrets = json.loads(body)
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
