"""OpenAI's API in the terms of this one: a chat or completion request as a ``POST /infer`` body, a reply as
OpenAI's response and stream chunks, this API's refusals as OpenAI's errors. No I/O here: ``tlcli.serve`` does it.

What OpenAI's clients send that has no meaning here is accepted when it asks for nothing (``model``, ``user``,
``n: 1``, a zero penalty, ``logprobs: false``…) and refused naming the parameter when it would change the answer
(``n: 2``, ``tools``…), so that a client never gets less than it asked for without being told.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

from jobqueue.contract import MESSAGE_ROLES

MODEL_ID: Final = "tinyllama-shape"
"""The one model this door offers: whichever the node's shape serves (its own name is in each answer)."""
SAMPLING: Final = ("temperature", "top_p", "seed")
IGNORED: Final = frozenset({"model", "user", "stream", "stream_options", "metadata", "store", "service_tier"})
"""Taken and dropped: they ask nothing of the model."""
NEUTRAL: Final[dict[str, tuple[Any, ...]]] = {
    "n": (1,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logprobs": (False, None),
    "echo": (False,),
    "best_of": (1,),
    "parallel_tool_calls": (True, False),
}
"""Accepted only at the value that changes nothing."""
ROLE_ALIASES: Final = {"developer": "system"}
"""OpenAI's newer name for the system message, which its SDKs send."""


@dataclass(frozen=True)
class OpenAIError(Exception):
    """An answer in OpenAI's error format: ``{"error": {"message", "type", "param", "code"}}``."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    retry_after: str | None = None

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(param: str, message: str) -> OpenAIError:
    return OpenAIError(400, f"{param}: {message}", param=param)


def _text_of(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only
        texts = []
        for i, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise bad(f"{param}[{i}]", "only text content parts are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise bad(param, "must be a string or a list of text parts")


def _refuse_what_changes_the_answer(request: dict[str, Any]) -> None:
    taken = {"messages", "prompt", "max_tokens", "max_completion_tokens", "stop", *SAMPLING}
    for name, value in request.items():
        if name in IGNORED or name in taken or value is None or (name in NEUTRAL and value in NEUTRAL[name]):
            continue
        raise bad(name, "not supported by this endpoint")


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list):
        raise bad("messages", "required: a list of {role, content}")
    taken = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise bad(f"messages[{i}]", "must be an object with role and content")
        role = ROLE_ALIASES.get(message.get("role"), message.get("role"))  # type: ignore[arg-type]
        if role not in MESSAGE_ROLES:
            raise bad(f"messages[{i}].role", f"must be one of {', '.join(MESSAGE_ROLES)}")
        taken.append({"role": role, "content": _text_of(message.get("content"), f"messages[{i}].content")})
    return taken


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    if not isinstance(prompt, str):
        raise bad("prompt", "required: one string")
    return prompt


def infer_body(kind: str, request: Any) -> dict[str, Any]:
    """The ``POST /infer`` body of a ``chat`` or ``completion`` request; raises ``OpenAIError`` 400. The API
    checks the rest (lengths, ranges) and names the field; ``from_api`` keeps that."""
    if not isinstance(request, dict):
        raise OpenAIError(400, "the body must be a JSON object")
    _refuse_what_changes_the_answer(request)
    body: dict[str, Any] = (
        {"messages": _messages(request.get("messages"))}
        if kind == "chat"
        else {"prompt": _prompt(request.get("prompt"))}
    )
    tokens = request.get("max_completion_tokens", request.get("max_tokens"))
    if tokens is not None:
        body["max_tokens"] = tokens
    body.update({name: request[name] for name in (*SAMPLING, "stop") if request.get(name) is not None})
    return body


def from_api(status: int, data: dict[str, Any], retry_after: str | None = None) -> OpenAIError:
    """This API's refusal of ``POST /infer`` as OpenAI's error, status kept."""
    message = str(data.get("message") or data.get("status") or data)
    if status == 400:  # noqa: PLR2004
        return OpenAIError(400, message, param=data.get("field"))
    if status in (401, 403):
        return OpenAIError(401, f"{message}: run `tl login`", type="authentication_error", code="invalid_api_key")
    if status == 413:  # noqa: PLR2004
        return OpenAIError(413, message, param="body")
    if status == 429:  # noqa: PLR2004
        return OpenAIError(429, message, type="rate_limit_error", code="rate_limit_exceeded", retry_after=retry_after)
    return OpenAIError(status if status >= 500 else 502, message, type="api_error", code=data.get("status"))  # noqa: PLR2004


def job_failed(data: dict[str, Any]) -> OpenAIError:
    """A job that settled without an answer (``failed``, ``expired``) or was not followed to its end."""
    reason = data.get("error") or (data.get("reply") or {}).get("error") or data.get("message") or data.get("status")
    return OpenAIError(
        502, f"the job {data.get('status', 'ended')}: {reason}", type="api_error", code=data.get("status")
    )


class Shaper:
    """One request's answer in OpenAI's shapes: whole, or as stream chunks."""

    def __init__(self, kind: str, job_id: str, model: str | None = None) -> None:
        self.kind = kind
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + job_id
        self.created = int(time.time())
        self.model = model or MODEL_ID

    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def whole(self, reply: dict[str, Any]) -> dict[str, Any]:
        self.model = reply.get("model") or self.model
        finish = reply.get("finish_reason") or "stop"
        text = str(reply.get("output", ""))
        if self.kind == "chat":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": finish, "logprobs": None}  # fmt: skip
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            obj = "text_completion"
        return {**self._base(obj), "choices": [choice], "usage": usage_of(reply)}

    def chunk(self, text: str | None = None, *, first: bool = False, finish: str | None = None) -> dict[str, Any]:
        if self.kind == "chat":
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return {**self._base("chat.completion.chunk"), "choices": [choice]}
        return {**self._base("text_completion"),
                "choices": [{"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}]}  # fmt: skip

    def usage_chunk(self, reply: dict[str, Any]) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self._base(obj), "choices": [], "usage": usage_of(reply)}


def usage_of(reply: dict[str, Any]) -> dict[str, int]:
    usage = reply.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def models() -> dict[str, Any]:
    return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "you"}]}
