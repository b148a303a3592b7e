"""The agent's configuration: one object, read from ``TL_*`` environment variables.

Every variable, its default and its meaning is listed in ``SETTINGS`` below; the README table is checked
against it by a test, so the two cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from jobqueue.envconfig import Parser, Setting, choice, float_above, int_between, read, switch, url

StopMode = Literal["stop", "dry-run"]


class SettingsError(ValueError):
    """One or more variables are invalid; the message lists each with the reason."""


SETTINGS: Final = {
    "redis_url": Setting("TL_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis holding the job queue."),
    "backend_url": Setting(
        "TL_BACKEND_URL", "http://127.0.0.1:8000", "OpenAI-compatible model server (vLLM, llama-server)."
    ),
    "model": Setting("TL_MODEL", "", "Model name sent to the backend; empty: the first of `/v1/models`."),
    "reply_bucket": Setting("TL_REPLY_BUCKET", None, "S3 bucket for replies (`replies/<id>.json`). Required."),
    "idle_minutes": Setting(
        "TL_IDLE_MINUTES", "5", "Idle minutes before the node stops itself; a job may ask for more (1–30)."
    ),
    "max_concurrency": Setting("TL_MAX_CONCURRENCY", "8", "Most jobs in flight at once (1–256)."),
    "metrics_port": Setting("TL_METRICS_PORT", "9108", "Prometheus port on 127.0.0.1; 0 turns it off."),
    "instance_id": Setting("TL_INSTANCE_ID", "", "EC2 instance to stop; empty: asked from IMDSv2."),
    "stop_mode": Setting("TL_STOP_MODE", "stop", "`stop` calls ec2:StopInstances; `dry-run` only logs."),
    "max_attempts": Setting("TL_MAX_ATTEMPTS", "3", "Attempts before a job gets a `failed` reply."),
    "claim_timeout_s": Setting(
        "TL_CLAIM_TIMEOUT_S", "15", "A claim not refreshed for this long is taken over by another agent."
    ),
    "heartbeat_s": Setting("TL_HEARTBEAT_S", "5", "Seconds between heartbeats (key TTL: three times this)."),
    "shutdown_grace_s": Setting(
        "TL_SHUTDOWN_GRACE_S",
        "30",
        "On SIGTERM, how long in-flight jobs may finish before they are handed back.",
    ),
    "default_max_tokens": Setting("TL_DEFAULT_MAX_TOKENS", "256", "max_tokens for jobs that set none."),
    "backend_connect_timeout_s": Setting("TL_BACKEND_CONNECT_TIMEOUT_S", "5", "Connect timeout to the backend."),
    "backend_read_timeout_s": Setting(
        "TL_BACKEND_READ_TIMEOUT_S", "60", "Longest silence allowed while a reply streams."
    ),
    "backend_start_timeout_s": Setting(
        "TL_BACKEND_START_TIMEOUT_S",
        "900",
        "If the backend is not ready this long after start, the node stops itself rather than burn money.",
    ),
    "idle_poll_s": Setting("TL_IDLE_POLL_S", "1", "How often the backend's own load is sampled for idleness."),
    "cloudwatch": Setting("TL_CLOUDWATCH", "on", "`on` sends AutoStops and job latency to CloudWatch (TLFIF)."),
    "consumer": Setting(
        "TL_CONSUMER",
        "",
        "Consumer name in the queue group; empty: the instance id (stable across restarts).",
    ),
    "log_level": Setting("TL_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR."),
    "shape": Setting(
        "TL_SHAPE", "", "The shape this boot runs as (`tl-shape` writes it); reported in heartbeat, metrics, replies."
    ),
    "instance_type": Setting("TL_INSTANCE_TYPE", "", "The instance type `tl-shape` read from IMDSv2 (reported)."),
}


_PARSERS: Final[dict[str, Parser]] = {
    "redis_url": url("redis", "rediss", "unix"),
    "backend_url": url("http", "https"),
    "idle_minutes": float_above(0, 30),
    "max_concurrency": int_between(1, 256),
    "metrics_port": int_between(0, 65535),
    "stop_mode": choice("stop", "dry-run"),
    "max_attempts": int_between(1, 20),
    "claim_timeout_s": float_above(0, 600),
    "heartbeat_s": float_above(0, 60),
    "shutdown_grace_s": float_above(0, 3600),
    "default_max_tokens": int_between(1, 4096),
    "backend_connect_timeout_s": float_above(0, 120),
    "backend_read_timeout_s": float_above(0, 3600),
    "backend_start_timeout_s": float_above(0, 86_400),
    "idle_poll_s": float_above(0, 60),
    "cloudwatch": switch,
    "log_level": choice("DEBUG", "INFO", "WARNING", "ERROR"),
}


@dataclass(frozen=True)
class Settings:
    redis_url: str
    backend_url: str
    model: str
    reply_bucket: str
    idle_minutes: float
    max_concurrency: int
    metrics_port: int
    instance_id: str
    stop_mode: StopMode
    max_attempts: int
    claim_timeout_s: float
    heartbeat_s: float
    shutdown_grace_s: float
    default_max_tokens: int
    backend_connect_timeout_s: float
    backend_read_timeout_s: float
    backend_start_timeout_s: float
    idle_poll_s: float
    cloudwatch: bool
    consumer: str
    log_level: str
    shape: str
    instance_type: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every ``TL_*`` variable; report all invalid ones at once."""
        values, problems = read(SETTINGS, _PARSERS, os.environ if env is None else env)
        if problems:
            raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems))
        return cls(**values)

    @property
    def idle_s(self) -> float:
        return self.idle_minutes * 60
