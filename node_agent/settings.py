"""The agent's configuration: one object, read from ``TL_*`` environment variables.

Each variable is declared once, as a field of ``Settings``: its name, default, meaning and parser on one line
(``jobqueue.envconfig``). ``SETTINGS`` lists them; the table in docs/operations.md is checked against it by a test,
so the two cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from jobqueue.envconfig import Setting, choice, declared, float_above, int_between, load, setting, switch, url
from node_agent.http1 import split_url

StopMode = Literal["stop", "dry-run"]


def http_url(raw: str) -> str:
    """An ``http://host[:port]`` URL, the only kind ``node_agent.http1`` speaks (the model server is on loopback)."""
    split_url(raw)
    return raw.rstrip("/")


class SettingsError(ValueError):
    """One or more variables are invalid; the message lists each with the reason."""


@dataclass(frozen=True)
class Settings:
    redis_url: str = setting(
        "TL_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis holding the job queue.", url("redis", "rediss", "unix")
    )
    backend_url: str = setting(
        "TL_BACKEND_URL",
        "http://127.0.0.1:8000",
        "OpenAI-compatible model server (vLLM, llama-server), plain HTTP.",
        http_url,
    )
    model: str = setting("TL_MODEL", "", "Model name sent to the backend; empty: the first of `/v1/models`.")
    reply_bucket: str = setting("TL_REPLY_BUCKET", None, "S3 bucket for replies (`replies/<id>.json`). Required.")
    idle_minutes: float = setting(
        "TL_IDLE_MINUTES",
        "5",
        "Idle minutes before the node stops itself; a job may ask for more (1–30).",
        float_above(0, 30),
    )
    max_concurrency: int = setting(
        "TL_MAX_CONCURRENCY", "8", "Most jobs in flight at once (1–256).", int_between(1, 256)
    )
    metrics_port: int = setting(
        "TL_METRICS_PORT", "9108", "Prometheus port on 127.0.0.1; 0 turns it off.", int_between(0, 65535)
    )
    instance_id: str = setting("TL_INSTANCE_ID", "", "EC2 instance to stop; empty: asked from IMDSv2.")
    stop_mode: StopMode = setting(
        "TL_STOP_MODE", "stop", "`stop` calls ec2:StopInstances; `dry-run` only logs.", choice("stop", "dry-run")
    )
    max_attempts: int = setting(
        "TL_MAX_ATTEMPTS", "3", "Attempts before a job gets a `failed` reply.", int_between(1, 20)
    )
    claim_timeout_s: float = setting(
        "TL_CLAIM_TIMEOUT_S",
        "15",
        "A claim not refreshed for this long is taken over by another agent.",
        float_above(0, 600),
    )
    heartbeat_s: float = setting(
        "TL_HEARTBEAT_S", "5", "Seconds between heartbeats (key TTL: three times this).", float_above(0, 60)
    )
    shutdown_grace_s: float = setting(
        "TL_SHUTDOWN_GRACE_S",
        "30",
        "On SIGTERM, how long in-flight jobs may finish before they are handed back.",
        float_above(0, 3600),
    )
    default_max_tokens: int = setting(
        "TL_DEFAULT_MAX_TOKENS", "256", "max_tokens for jobs that set none.", int_between(1, 4096)
    )
    backend_connect_timeout_s: float = setting(
        "TL_BACKEND_CONNECT_TIMEOUT_S", "5", "Connect timeout to the backend.", float_above(0, 120)
    )
    backend_read_timeout_s: float = setting(
        "TL_BACKEND_READ_TIMEOUT_S", "60", "Longest silence allowed while a reply streams.", float_above(0, 3600)
    )
    backend_start_timeout_s: float = setting(
        "TL_BACKEND_START_TIMEOUT_S",
        "900",
        "If the backend is not ready this long after start, the node stops itself rather than burn money.",
        float_above(0, 86_400),
    )
    idle_poll_s: float = setting(
        "TL_IDLE_POLL_S", "1", "How often the backend's own load is sampled for idleness.", float_above(0, 60)
    )
    cloudwatch: bool = setting(
        "TL_CLOUDWATCH", "on", "`on` sends AutoStops and job latency to CloudWatch (TLFIF).", switch
    )
    consumer: str = setting(
        "TL_CONSUMER", "", "Consumer name in the queue group; empty: the instance id (stable across restarts)."
    )
    log_level: str = setting(
        "TL_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR.", choice("DEBUG", "INFO", "WARNING", "ERROR")
    )
    shape: str = setting(
        "TL_SHAPE", "", "The shape this boot runs as (`tl-shape` writes it); reported in heartbeat, metrics, replies."
    )
    instance_type: str = setting("TL_INSTANCE_TYPE", "", "The instance type `tl-shape` read from IMDSv2 (reported).")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every ``TL_*`` variable; report all invalid ones at once."""
        return load(cls, os.environ if env is None else env, SettingsError)

    @property
    def idle_s(self) -> float:
        return self.idle_minutes * 60


SETTINGS: Final[dict[str, Setting]] = declared(Settings)
