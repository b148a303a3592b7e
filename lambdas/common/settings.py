"""The functions' configuration: one object, read from ``TL_*`` environment variables.

Each variable is declared once, as a field of ``Settings`` (name, default, meaning, parser: ``jobqueue.envconfig``);
``SETTINGS`` lists them and the table in docs/operations.md is checked against it by a test. A value that is
malformed fails at start with every problem listed; a value that only some functions need (the reply bucket, the
cost topic) is checked by ``require`` where it is used.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from jobqueue import contract, inbox
from jobqueue.envconfig import Setting, choice, declared, int_between, load, setting, switch, url


class SettingsError(ValueError):
    """One or more variables are invalid or missing; the message names each with the reason."""


_OFF: Final = frozenset({"", "0", "false", "off", "no"})


def _positive(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _flag(raw: str) -> bool:
    """A kill switch is on when set to anything but empty, 0, false, off or no."""
    return raw.strip().lower() not in _OFF


def _tag(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ValueError("must be key=value")
    return key.strip(), value.strip()


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())


def _targets(raw: str) -> tuple[str, ...]:
    targets = tuple(t.strip() for t in raw.split(",") if t.strip())
    if not targets:
        raise ValueError("must name at least one instance type")
    return targets


@dataclass(frozen=True)
class Settings:
    redis_url: str = setting(
        "TL_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis holding the job queue.", url("redis", "rediss", "unix")
    )
    redis_timeout_s: float = setting("TL_REDIS_TIMEOUT_S", "1", "Command timeout for Redis, seconds.", _positive)
    redis_connect_timeout_s: float = setting(
        "TL_REDIS_CONNECT_TIMEOUT_S",
        "0.1",
        "Connect timeout for Redis, seconds: a sleeping node does not answer, and inside a VPC a connect takes "
        "well under a millisecond.",
        _positive,
    )
    redis_secrets: str = setting(
        "TL_REDIS_SECRETS",
        "",
        "`s3://bucket/key` of the node Redis's `router` password and certificate (node mode; the aws_stack role "
        "copies them from SSM); empty: the URL as it is.",
    )
    queue_mode: str = setting(
        "TL_QUEUE_MODE",
        "node",
        "`node`: Redis sleeps with the node; `elasticache`: Redis is always up.",
        choice("node", "elasticache"),
    )
    park_ttl_s: int = setting(
        "TL_PARK_TTL_S",
        str(inbox.PARK_TTL_S),
        "A parked request no node adopted this long is answered `expired`.",
        int_between(60, 86_400),
    )
    park_max: int = setting(
        "TL_PARK_MAX", str(inbox.PARK_MAX), "Parked requests at most, all users together.", int_between(1, 10_000)
    )
    jwks_url: str = setting("TL_JWKS_URL", "", "Cognito JWKS (`…/<pool>/.well-known/jwks.json`). Required for routes.")
    jwt_issuer: str = setting(
        "TL_JWT_ISSUER", "", "Expected `iss`: `https://cognito-idp.<region>.amazonaws.com/<pool>`."
    )
    jwt_audience: str = setting("TL_JWT_AUDIENCE", "", "Expected `aud`: the Cognito app client id.")
    jwt_token_use: str = setting("TL_JWT_TOKEN_USE", "id", "Expected `token_use` (Cognito id tokens carry `aud`).")
    node_tag: tuple[str, str] = setting(
        "TL_NODE_TAG", "env=tinyllama", "Tag `key=value` that marks the node instance.", _tag
    )
    reply_bucket: str = setting("TL_REPLY_BUCKET", "", "S3 bucket of the replies (`replies/<id>.json`).")
    disable_router: bool = setting(
        "TL_DISABLE_LAM_ROUTER",
        "",
        "Kill switch: any value but empty/0/false/off answers 503 on every route but /ping.",
        _flag,
    )
    throttle_burst: int = setting(
        "TL_THROTTLE_BURST", str(contract.THROTTLE_BURST), "Per-user burst of /infer calls.", int_between(1, 1000)
    )
    throttle_per_minute: int = setting(
        "TL_THROTTLE_PER_MINUTE",
        str(contract.THROTTLE_PER_MINUTE),
        "Per-user sustained /infer calls a minute.",
        int_between(1, 60_000),
    )
    start_eta_s: int = setting(
        "TL_START_ETA_S", "90", "The `eta` a cold boot answers with, seconds.", int_between(0, 3600)
    )
    presign_ttl_s: int = setting(
        "TL_PRESIGN_TTL_S", "900", "Lifetime of the presigned reply URL, seconds.", int_between(60, 7 * 86_400)
    )
    admin_group: str = setting("TL_ADMIN_GROUP", "admin", "Cognito group allowed to resize the node.")
    resize_targets: tuple[str, ...] = setting(
        "TL_RESIZE_TARGETS", "g4dn.xlarge,t3.small", "Instance types `/resize` accepts, comma-separated.", _targets
    )
    resize_mode: str = setting(
        "TL_RESIZE_MODE",
        "async",
        "`async`: /resize answers 202 and the function re-invokes itself; `inline` waits.",
        choice("async", "inline"),
    )
    health_max_ms: int = setting(
        "TL_HEALTH_MAX_MS", "200", "queue_health fails when Redis PING takes longer.", int_between(1, 60_000)
    )
    budget_release_eip: bool = setting(
        "TL_BUDGET_RELEASE_EIP", "off", "budget_killer also releases the node's EIP.", switch
    )
    budget_delete_redis: bool = setting(
        "TL_BUDGET_DELETE_REDIS",
        "off",
        "budget_killer also deletes the Redis replication group `TL_REDIS_CLUSTER_ID`.",
        switch,
    )
    redis_cluster_id: str = setting("TL_REDIS_CLUSTER_ID", "", "ElastiCache cluster id (for budget_killer).")
    usd_eur_rate: float = setting(
        "TL_USD_EUR_RATE",
        "0.86",
        "EUR per USD; the billing metrics are in USD (cost_publisher, cost_summary).",
        _positive,
    )
    budget_eur: float = setting(
        "TL_BUDGET_EUR", "20", "Monthly budget the cost summary compares against, EUR.", _positive
    )
    cost_topic_arn: str = setting("TL_COST_TOPIC_ARN", "", "SNS topic of the daily cost summary.")
    ping_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting(
        "TL_PING_CIDRS", "", "Networks allowed to GET /ping, comma-separated (the VPC's); empty: everyone.", _networks
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        return load(cls, os.environ if env is None else env, SettingsError)

    def require(self, *names: str) -> None:
        """Fail with every missing variable named, for settings that only some functions need."""
        missing = [SETTINGS[n].env for n in names if not getattr(self, n)]
        if missing:
            raise SettingsError("missing configuration: " + ", ".join(f"{m} is required" for m in missing))


SETTINGS: Final[dict[str, Setting]] = declared(Settings)
