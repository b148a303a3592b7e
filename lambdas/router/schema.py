"""What ``POST /infer`` accepts: a JSON schema next to the handler, and the checks a schema cannot express."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import fastjsonschema

from jobqueue import contract
from lambdas.common.http import HttpError

MAX_BODY_BYTES: Final = 16 * 1024

INFER_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "POST /infer body",
    "type": "object",
    "additionalProperties": False,
    "required": ["prompt"],
    "properties": {
        "prompt": {"type": "string", "minLength": 1},
        "idle_minutes": {
            "type": "integer",
            "minimum": contract.IDLE_MINUTES_MIN,
            "maximum": contract.IDLE_MINUTES_MAX,
        },
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": contract.MAX_TOKENS_LIMIT},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    },
}

_validate: Final = fastjsonschema.compile(INFER_SCHEMA)


@dataclass(frozen=True)
class InferRequest:
    prompt: str
    idle_minutes: int
    max_tokens: int | None
    temperature: float | None


def bad(field: str, reason: str) -> HttpError:
    return HttpError(400, f"{field}: {reason}", field=field)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def parse_infer(raw: bytes | None) -> InferRequest:
    """Check a request body; raises ``HttpError`` 413 or 400 naming the field at fault."""
    if raw is None or not raw.strip():
        raise bad("body", "must be a JSON object with a prompt")
    if len(raw) > MAX_BODY_BYTES:
        raise HttpError(413, f"body: must be at most {MAX_BODY_BYTES} bytes, got {len(raw)}", field="body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("body", "not valid UTF-8") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise bad("body", f"not valid JSON ({exc})") from None
    try:
        _validate(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        name = exc.name or "data"
        field = name.removeprefix("data.") if name != "data" else "body"
        if exc.rule == "additionalProperties" and isinstance(data, dict):
            unknown = sorted(set(data) - set(INFER_SCHEMA["properties"]))
            raise bad(unknown[0] if unknown else field, "unknown field") from None
        raise bad(field, exc.message.removeprefix(name + " ")) from None
    prompt = data["prompt"]
    try:
        size = len(prompt.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate escaped in the JSON (\ud800) is not text
        raise bad("prompt", "not valid Unicode text") from None
    if size > contract.MAX_PROMPT_BYTES:
        raise bad("prompt", f"must be at most {contract.MAX_PROMPT_BYTES} bytes of UTF-8, got {size}")
    return InferRequest(
        prompt=prompt,
        idle_minutes=data.get("idle_minutes", contract.DEFAULT_IDLE_MINUTES),
        max_tokens=data.get("max_tokens"),
        temperature=None if data.get("temperature") is None else float(data["temperature"]),
    )
