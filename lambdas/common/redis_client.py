"""The Redis connection of the functions that use the queue (router, queue_health)."""

from __future__ import annotations

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
    from mypy_boto3_ssm import SSMClient

USER: Final = "router"
"""The functions' ACL user on the node's Redis (jobqueue/acl.py)."""


class SecretsError(RuntimeError):
    """The Redis secrets named by TL_REDIS_SECRETS cannot be read; the message says which and why."""


def with_secrets(url: str, prefix: str, ssm: SSMClient) -> str:
    """The Redis URL with the functions' ACL user, its password and the pinned certificate of the node's Redis,
    read from SSM (``<prefix>/router``, a SecureString, and ``<prefix>/tls_cert``) once per container."""
    names = [f"{prefix}/{USER}", f"{prefix}/tls_cert"]
    try:
        found = ssm.get_parameters(Names=names, WithDecryption=True)
    except (ClientError, BotoCoreError) as exc:
        raise SecretsError(f"cannot read {', '.join(names)} from SSM: {exc}") from None
    values = {p["Name"]: p["Value"] for p in found.get("Parameters", [])}
    missing = [n for n in names if n not in values]
    if missing:
        raise SecretsError(f"missing SSM parameters: {', '.join(missing)} (the aws_stack role makes them)")
    with tempfile.NamedTemporaryFile("w", suffix=".pem", prefix="tl-redis-ca-", delete=False) as ca:
        ca.write(values[names[1]])
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{USER}:{quote(values[names[0]], safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
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
    url = with_secrets(s.redis_url, s.redis_secrets, aws("ssm")) if s.redis_secrets else s.redis_url
    timeout = s.redis_timeout_s if timeout_s is None else timeout_s
    return connect(url, timeout, min(s.redis_connect_timeout_s, timeout))
