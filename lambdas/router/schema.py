"""What ``POST /infer`` accepts: the job contract's input fields (``jobqueue.contract.INPUT_PROPERTIES``) and the
node's idle time, with the contract's own checks of what a schema cannot express."""

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
    "properties": {
        **contract.INPUT_PROPERTIES,
        # the cap in bytes is checked after (contract.check_input): here only that there is text
        "prompt": {"type": "string", "minLength": 1},
        "idle_minutes": {
            "type": "integer",
            "minimum": contract.IDLE_MINUTES_MIN,
            "maximum": contract.IDLE_MINUTES_MAX,
        },
    },
}

_validate: Final = fastjsonschema.compile(INFER_SCHEMA)


@dataclass(frozen=True)
class InferRequest:
    prompt: str | None
    messages: list[contract.Message] | None
    idle_minutes: int
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    stop: list[str] | None
    seed: int | None

    def job_fields(self) -> dict[str, Any]:
        """The keyword arguments of ``contract.new_job`` besides the owner."""
        return {"messages": self.messages, "idle_minutes": self.idle_minutes, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "stop": self.stop, "seed": self.seed}  # fmt: skip


def bad(field: str, reason: str) -> HttpError:
    return HttpError(400, f"{field}: {reason}", field=field)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def parse_infer(raw: bytes | None) -> InferRequest:
    """Check a request body; raises ``HttpError`` 413 or 400 naming the field at fault."""
    if raw is None or not raw.strip():
        raise bad("body", "must be a JSON object with a prompt or messages")
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
    if isinstance(data, dict) and isinstance(data.get("stop"), str):
        data["stop"] = [data["stop"]]  # OpenAI's APIs take one stop string or a list
    try:
        _validate(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        if exc.rule == "additionalProperties" and isinstance(data, dict) and exc.name == "data":
            unknown = sorted(set(data) - set(INFER_SCHEMA["properties"]))
            raise bad(unknown[0] if unknown else "body", "unknown field") from None
        error = contract.schema_error(exc, "body")
        raise bad(error.field, error.reason) from None
    try:
        contract.check_input(data)
    except contract.JobError as exc:
        raise bad(exc.field, exc.reason) from None
    return InferRequest(
        prompt=data.get("prompt"),
        messages=data.get("messages"),
        idle_minutes=data.get("idle_minutes", contract.DEFAULT_IDLE_MINUTES),
        max_tokens=data.get("max_tokens"),
        temperature=_number(data.get("temperature")),
        top_p=_number(data.get("top_p")),
        stop=data.get("stop"),
        seed=data.get("seed"),
    )
