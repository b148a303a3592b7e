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
MAX_INPUT_BYTES: Final = 6144
"""The most UTF-8 bytes of a job's input: the prompt, or all the messages' content together."""
MESSAGE_ROLES: Final = ("system", "user", "assistant")
MAX_MESSAGES: Final = 64
MAX_STOP: Final = 4
"""Stop sequences per job (OpenAI's limit)."""
MAX_SEED: Final = 2**32 - 1
"""Seeds both backends take: llama-server's is 32-bit."""
TEMPERATURE_MAX: Final = 2.0
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


class Message(TypedDict):
    role: str
    content: str


class Job(TypedDict):
    """One request. Its input is ``prompt`` (a completion) or ``messages`` (a chat, OpenAI's format), never both."""

    v: int
    id: str
    prompt: NotRequired[str]
    messages: NotRequired[list[Message]]
    idle_minutes: int
    reply_key: str
    created_at: float
    owner: str
    max_tokens: NotRequired[int]
    temperature: NotRequired[float]
    top_p: NotRequired[float]
    stop: NotRequired[list[str]]
    seed: NotRequired[int]


INPUT_PROPERTIES: Final[dict[str, Any]] = {
    "prompt": {"type": "string", "minLength": 1, "maxLength": MAX_INPUT_BYTES},
    "messages": {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_MESSAGES,
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["role", "content"],
            "properties": {"role": {"enum": list(MESSAGE_ROLES)}, "content": {"type": "string"}},
        },
    },
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_LIMIT},
    "temperature": {"type": "number", "minimum": 0, "maximum": TEMPERATURE_MAX},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "stop": {"type": "array", "maxItems": MAX_STOP, "items": {"type": "string", "minLength": 1}},
    "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
}
"""What a request may ask for: the job's input and sampling fields. The router's ``POST /infer`` schema is built
from these (``lambdas/router/schema.py``), so the API and the job cannot disagree."""
SAMPLING_FIELDS: Final = ("temperature", "top_p", "stop", "seed")
"""Passed to the model server as they are (``max_tokens`` has the agent's default)."""

JOB_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "tinyllama-shape job",
    "type": "object",
    "additionalProperties": False,
    "required": ["v", "id", "idle_minutes", "reply_key", "created_at", "owner"],
    "properties": {
        "v": {"const": SCHEMA_VERSION},
        "id": {"type": "string", "pattern": f"^{_UUID4}$"},
        **INPUT_PROPERTIES,
        "idle_minutes": {"type": "integer", "minimum": IDLE_MINUTES_MIN, "maximum": IDLE_MINUTES_MAX},
        "reply_key": {"type": "string", "pattern": f"^replies/{_UUID4}\\.json$"},
        "created_at": {"type": "number", "minimum": 0},
        "owner": {"type": "string", "minLength": 1, "maxLength": 128},
    },
}

_validate_schema = fastjsonschema.compile(JOB_SCHEMA)


class JobError(ValueError):
    """A job that breaks the contract; the message says which field and why (``field``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def schema_error(exc: fastjsonschema.JsonSchemaValueException, whole: str) -> JobError:
    """A schema error as the field at fault (``messages[0].role``) and why; ``whole`` names the document."""
    name = exc.name or "data"
    field = name.removeprefix("data.") if name != "data" else whole
    return JobError(field, exc.message.removeprefix(name + " "))


def check_input(data: dict[str, Any]) -> None:
    """The rules of a request's input that a schema cannot express (after the schema passed): ``prompt`` or
    ``messages``, exactly one; the byte cap over the whole input; text that is valid Unicode."""
    has_prompt, has_messages = "prompt" in data, "messages" in data
    if has_prompt == has_messages:
        raise JobError("prompt", "give either prompt or messages" + (", not both" if has_prompt else ""))
    texts = [("prompt", data["prompt"])] if has_prompt else [
        (f"messages[{i}].content", m["content"]) for i, m in enumerate(data["messages"])
    ]  # fmt: skip
    size = 0
    for field, text in texts:
        try:
            size += len(text.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate escaped in the JSON (\ud800) is not text
            raise JobError(field, "not valid Unicode text") from None
    where = "prompt" if has_prompt else "messages"
    if size > MAX_INPUT_BYTES:
        raise JobError(where, f"must be at most {MAX_INPUT_BYTES} bytes of UTF-8 in all, got {size}")
    if size == 0:
        raise JobError(where, "has no text")


def validate(job: object) -> Job:
    """Check a decoded job against the schema and the rules a schema cannot express."""
    try:
        _validate_schema(job)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise schema_error(exc, "job") from None
    checked = cast(Job, job)
    check_input(cast(dict[str, Any], checked))
    if checked["reply_key"] != reply_object_key(checked["id"]):
        raise JobError("reply_key", f"must be {reply_object_key(checked['id'])}")
    return checked


def is_chat(job: Job) -> bool:
    return "messages" in job


def decode(raw: str | bytes) -> Job:
    """Parse and validate a job as stored in Redis."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JobError("job", f"not valid JSON ({exc})") from None
    return validate(data)


def encode(job: Job) -> str:
    return json.dumps(job, separators=(",", ":"), ensure_ascii=False)


def new_job(
    prompt: str | None,
    owner: str,
    *,
    messages: list[Message] | None = None,
    idle_minutes: int = DEFAULT_IDLE_MINUTES,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    stop: list[str] | None = None,
    seed: int | None = None,
    job_id: str | None = None,
    now: float | None = None,
) -> Job:
    """Build a valid job from a prompt or chat messages (raises JobError naming the field when an argument breaks
    the contract)."""
    jid = job_id or str(uuid.uuid4())
    job: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "id": jid,
        "idle_minutes": idle_minutes,
        "reply_key": reply_object_key(jid),
        "created_at": time.time() if now is None else now,
        "owner": owner,
    }
    optional = {"prompt": prompt, "messages": messages, "max_tokens": max_tokens, "temperature": temperature,
                "top_p": top_p, "stop": stop, "seed": seed}  # fmt: skip
    job.update({name: value for name, value in optional.items() if value is not None})
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
    chat: bool = False,
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
    ``shape`` is the node's shape that ran the job (``tl-shape``), which the figures depend on. A chat job's reply
    also carries the assistant's ``message`` (OpenAI's shape); ``output`` is its text either way."""

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 1)

    reply: dict[str, Any] = {
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
    if chat:
        reply["message"] = {"role": "assistant", "content": output}
    return reply
