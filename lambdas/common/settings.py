"""The functions' configuration: one object, read from ``TL_*`` environment variables.

Every variable, its default and its meaning is in ``SETTINGS``; the README table is checked against it by a
test. A value that is malformed fails at start with every problem listed; a value that only some functions
need (the reply bucket, the cost topic) is checked by ``require`` where it is used.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from jobqueue import contract, inbox
from jobqueue.envconfig import Parser, Setting, choice, int_between, read, switch, url


class SettingsError(ValueError):
    """One or more variables are invalid or missing; the message names each with the reason."""


SETTINGS: Final = {
    "redis_url": Setting("TL_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis holding the job queue."),
    "redis_timeout_s": Setting("TL_REDIS_TIMEOUT_S", "1", "Command timeout for Redis, seconds."),
    "redis_connect_timeout_s": Setting(
        "TL_REDIS_CONNECT_TIMEOUT_S",
        "0.1",
        "Connect timeout for Redis, seconds: a sleeping node does not answer, and inside a VPC a connect takes "
        "well under a millisecond.",
    ),
    "redis_secrets": Setting(
        "TL_REDIS_SECRETS",
        "",
        "`s3://bucket/key` of the node Redis's `router` password and certificate (node mode; the aws_stack role "
        "copies them from SSM); empty: the URL as it is.",
    ),
    "queue_mode": Setting(
        "TL_QUEUE_MODE", "node", "`node`: Redis sleeps with the node; `elasticache`: Redis is always up."
    ),
    "park_ttl_s": Setting(
        "TL_PARK_TTL_S", str(inbox.PARK_TTL_S), "A parked request no node adopted this long is answered `expired`."
    ),
    "park_max": Setting("TL_PARK_MAX", str(inbox.PARK_MAX), "Parked requests at most, all users together."),
    "jwks_url": Setting("TL_JWKS_URL", "", "Cognito JWKS (`…/<pool>/.well-known/jwks.json`). Required for routes."),
    "jwt_issuer": Setting("TL_JWT_ISSUER", "", "Expected `iss`: `https://cognito-idp.<region>.amazonaws.com/<pool>`."),
    "jwt_audience": Setting("TL_JWT_AUDIENCE", "", "Expected `aud`: the Cognito app client id."),
    "jwt_token_use": Setting("TL_JWT_TOKEN_USE", "id", "Expected `token_use` (Cognito id tokens carry `aud`)."),
    "node_tag": Setting("TL_NODE_TAG", "env=tinyllama", "Tag `key=value` that marks the node instance."),
    "reply_bucket": Setting("TL_REPLY_BUCKET", "", "S3 bucket of the replies (`replies/<id>.json`)."),
    "disable_router": Setting(
        "TL_DISABLE_LAM_ROUTER",
        "",
        "Kill switch: any value but empty/0/false/off answers 503 on every route but /ping.",
    ),
    "throttle_burst": Setting("TL_THROTTLE_BURST", str(contract.THROTTLE_BURST), "Per-user burst of /infer calls."),
    "throttle_per_minute": Setting(
        "TL_THROTTLE_PER_MINUTE", str(contract.THROTTLE_PER_MINUTE), "Per-user sustained /infer calls a minute."
    ),
    "start_eta_s": Setting("TL_START_ETA_S", "90", "The `eta` a cold boot answers with, seconds."),
    "presign_ttl_s": Setting("TL_PRESIGN_TTL_S", "900", "Lifetime of the presigned reply URL, seconds."),
    "admin_group": Setting("TL_ADMIN_GROUP", "admin", "Cognito group allowed to resize the node."),
    "resize_targets": Setting(
        "TL_RESIZE_TARGETS", "g4dn.xlarge,t3.small", "Instance types `/resize` accepts, comma-separated."
    ),
    "resize_mode": Setting(
        "TL_RESIZE_MODE", "async", "`async`: /resize answers 202 and the function re-invokes itself; `inline` waits."
    ),
    "health_max_ms": Setting("TL_HEALTH_MAX_MS", "200", "queue_health fails when Redis PING takes longer."),
    "budget_release_eip": Setting("TL_BUDGET_RELEASE_EIP", "off", "budget_killer also releases the node's EIP."),
    "budget_delete_redis": Setting(
        "TL_BUDGET_DELETE_REDIS", "off", "budget_killer also deletes the Redis replication group `TL_REDIS_CLUSTER_ID`."
    ),
    "redis_cluster_id": Setting("TL_REDIS_CLUSTER_ID", "", "ElastiCache cluster id (for budget_killer)."),
    "usd_eur_rate": Setting(
        "TL_USD_EUR_RATE", "0.86", "EUR per USD; the billing metrics are in USD (cost_publisher, cost_summary)."
    ),
    "budget_eur": Setting("TL_BUDGET_EUR", "20", "Monthly budget the cost summary compares against, EUR."),
    "cost_topic_arn": Setting("TL_COST_TOPIC_ARN", "", "SNS topic of the daily cost summary."),
    "ping_cidrs": Setting(
        "TL_PING_CIDRS", "", "Networks allowed to GET /ping, comma-separated (the VPC's); empty: everyone."
    ),
}

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


_PARSERS: Final[dict[str, Parser]] = {
    "redis_url": url("redis", "rediss", "unix"),
    "redis_timeout_s": _positive,
    "redis_connect_timeout_s": _positive,
    "queue_mode": choice("node", "elasticache"),
    "park_ttl_s": int_between(60, 86_400),
    "park_max": int_between(1, 10_000),
    "throttle_burst": int_between(1, 1000),
    "throttle_per_minute": int_between(1, 60_000),
    "start_eta_s": int_between(0, 3600),
    "presign_ttl_s": int_between(60, 7 * 86_400),
    "resize_targets": _targets,
    "ping_cidrs": _networks,
    "resize_mode": choice("async", "inline"),
    "health_max_ms": int_between(1, 60_000),
    "node_tag": _tag,
    "disable_router": _flag,
    "budget_release_eip": switch,
    "budget_delete_redis": switch,
    "usd_eur_rate": _positive,
    "budget_eur": _positive,
}


@dataclass(frozen=True)
class Settings:
    redis_url: str
    redis_timeout_s: float
    redis_connect_timeout_s: float
    redis_secrets: str
    queue_mode: str
    park_ttl_s: int
    park_max: int
    jwks_url: str
    jwt_issuer: str
    jwt_audience: str
    jwt_token_use: str
    node_tag: tuple[str, str]
    reply_bucket: str
    disable_router: bool
    throttle_burst: int
    throttle_per_minute: int
    start_eta_s: int
    presign_ttl_s: int
    admin_group: str
    resize_targets: tuple[str, ...]
    resize_mode: str
    health_max_ms: int
    budget_release_eip: bool
    budget_delete_redis: bool
    redis_cluster_id: str
    usd_eur_rate: float
    budget_eur: float
    cost_topic_arn: str
    ping_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        values, problems = read(SETTINGS, _PARSERS, os.environ if env is None else env)
        if problems:
            raise SettingsError("invalid configuration: " + "; ".join(problems))
        return cls(**values)

    def require(self, *names: str) -> None:
        """Fail with every missing variable named, for settings that only some functions need."""
        missing = [SETTINGS[n].env for n in names if not getattr(self, n)]
        if missing:
            raise SettingsError("missing configuration: " + ", ".join(f"{m} is required" for m in missing))
