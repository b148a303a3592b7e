"""What a job is: key names, limits, the JSON schema, and how a job is built and checked.

The router Lambda writes jobs and the node agent reads them; both import this module and nothing else
defines a key name or a limit.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, Final, NotRequired, TypedDict, cast

import fastjsonschema

SCHEMA_VERSION: Final = 1
JOB_TTL_S: Final = 300
"""How long an enqueued job waits to be claimed before it expires."""
CLAIMED_TTL_S: Final = 3600
"""How long a claimed job is kept so that an attempt that died can be reclaimed."""
RESULT_TTL_S: Final = 86_400
"""How long the settled status of a job stays in Redis (the reply itself lives in S3)."""
REPLY_STREAM_TTL_S: Final = 600
"""How long the live partial text of a job stays readable after its last update."""
MAX_PROMPT_BYTES: Final = 6144
MAX_QUEUE_LENGTH: Final = 1000
DEAD_LETTER_LENGTH: Final = 1000
IDLE_MINUTES_MIN: Final = 1
IDLE_MINUTES_MAX: Final = 30
DEFAULT_IDLE_MINUTES: Final = 5
MAX_TOKENS_LIMIT: Final = 4096

QUEUE_STREAM: Final = "tl:queue"
CONSUMER_GROUP: Final = "tl:agents"
DEAD_LETTERS: Final = "tl:deadletter"
HEARTBEAT: Final = "tl:heartbeat"
WAKE: Final = "tl:wake"
"""Set by the router when it queued a job for a node that was not serving; a node that stops while this
key exists and jobs wait is started again (the EC2 state-change event reaches the router)."""

SERVING_STATES: Final = ("starting", "ready", "busy")
"""Heartbeat states of an agent that will claim what is queued. ``draining`` (shutting down) and ``stopping``
(it decided to stop the node; it never says ``ready`` again) are not serving: the router parks jobs in S3."""

THROTTLE_BURST: Final = 5
THROTTLE_PER_MINUTE: Final = 20

_UUID4: Final = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
UUID4_RE: Final = re.compile(f"^{_UUID4}$")

FINAL_STATUSES: Final = ("done", "failed", "expired")


def is_serving(heartbeat: dict[str, Any] | None) -> bool:
    """Whether the agent that wrote this heartbeat will claim a job queued now."""
    return heartbeat is not None and heartbeat.get("state") in SERVING_STATES


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def attempts_key(job_id: str) -> str:
    return f"attempts:{job_id}"


def result_key(job_id: str) -> str:
    return f"result:{job_id}"


def reply_stream_key(job_id: str) -> str:
    return f"reply:{job_id}"


def owner_key(job_id: str) -> str:
    """Who submitted a job; kept as long as its result, so that only its owner may read it."""
    return f"owner:{job_id}"


def rate_key(user: str) -> str:
    """Token bucket of one user (the token's ``sub``)."""
    return f"rate:{user}"


def reply_object_key(job_id: str) -> str:
    """Where the final reply of a job lives inside the reply bucket."""
    return f"replies/{job_id}.json"


class Job(TypedDict):
    v: int
    id: str
    prompt: str
    idle_minutes: int
    reply_key: str
    created_at: float
    owner: str
    max_tokens: NotRequired[int]
    temperature: NotRequired[float]


JOB_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "tinyllama-shape job",
    "type": "object",
    "additionalProperties": False,
    "required": ["v", "id", "prompt", "idle_minutes", "reply_key", "created_at", "owner"],
    "properties": {
        "v": {"const": SCHEMA_VERSION},
        "id": {"type": "string", "pattern": f"^{_UUID4}$"},
        "prompt": {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT_BYTES},
        "idle_minutes": {"type": "integer", "minimum": IDLE_MINUTES_MIN, "maximum": IDLE_MINUTES_MAX},
        "reply_key": {"type": "string", "pattern": f"^replies/{_UUID4}\\.json$"},
        "created_at": {"type": "number", "minimum": 0},
        "owner": {"type": "string", "minLength": 1, "maxLength": 128},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_LIMIT},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    },
}

_validate_schema = fastjsonschema.compile(JOB_SCHEMA)


class JobError(ValueError):
    """A job that breaks the contract; the message says which field and why."""


def validate(job: object) -> Job:
    """Check a decoded job against the schema and the rules a schema cannot express."""
    try:
        _validate_schema(job)
    except fastjsonschema.JsonSchemaValueException as exc:
        name = exc.name or "data"
        field = name.removeprefix("data.") if name != "data" else "job"
        raise JobError(f"{field}: {exc.message.removeprefix(name + ' ')}") from None
    checked = cast(Job, job)
    if len(checked["prompt"].encode("utf-8")) > MAX_PROMPT_BYTES:
        raise JobError(f"prompt: must be at most {MAX_PROMPT_BYTES} bytes of UTF-8")
    if checked["reply_key"] != reply_object_key(checked["id"]):
        raise JobError(f"reply_key: must be {reply_object_key(checked['id'])}")
    return checked


def decode(raw: str | bytes) -> Job:
    """Parse and validate a job as stored in Redis."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobError(f"job: not valid JSON ({exc})") from None
    return validate(data)


def encode(job: Job) -> str:
    return json.dumps(job, separators=(",", ":"), ensure_ascii=False)


def new_job(
    prompt: str,
    owner: str,
    *,
    idle_minutes: int = DEFAULT_IDLE_MINUTES,
    max_tokens: int | None = None,
    temperature: float | None = None,
    job_id: str | None = None,
    now: float | None = None,
) -> Job:
    """Build a valid job (raises JobError naming the field when an argument breaks the contract)."""
    jid = job_id or str(uuid.uuid4())
    job: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "id": jid,
        "prompt": prompt,
        "idle_minutes": idle_minutes,
        "reply_key": reply_object_key(jid),
        "created_at": time.time() if now is None else now,
        "owner": owner,
    }
    if max_tokens is not None:
        job["max_tokens"] = max_tokens
    if temperature is not None:
        job["temperature"] = temperature
    return validate(job)


def build_reply(
    job_id: str,
    status: str,
    *,
    owner: str | None = None,
    output: str = "",
    model: str | None = None,
    usage: dict[str, int] | None = None,
    finish_reason: str | None = None,
    error: str | None = None,
    attempts: int = 0,
    created_at: float | None = None,
    claimed_at: float | None = None,
    ttft_s: float | None = None,
    started_at: float | None = None,
    finished_at: float,
    shape: str | None = None,
) -> dict[str, Any]:
    """The reply document. Timings are in milliseconds: queued (created → claimed), ttft, total (claim → end);
    ``shape`` is the node's shape that ran the job (``tl-shape``), which the figures depend on."""

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 1)

    return {
        "id": job_id,
        "status": status,
        "owner": owner,
        "output": output,
        "model": model,
        "usage": usage or {},
        "finish_reason": finish_reason,
        "error": error,
        "attempts": attempts,
        "timings": {
            "created_at": created_at,
            "claimed_at": claimed_at,
            "finished_at": finished_at,
            "queued_ms": ms(claimed_at - created_at) if claimed_at and created_at else None,
            "ttft_ms": ms(ttft_s),
            "total_ms": ms(finished_at - started_at) if started_at else None,
            "shape": shape,
        },
    }
