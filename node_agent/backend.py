"""Client of the OpenAI-compatible model server (vLLM on the GPU shape, llama-server on CPU and in tests).

The HTTP is ``node_agent.http1``'s: the stream's body is split into SSE lines and absorbed as each read arrives,
from the connection itself, with no task switch a token. The agent's CPU per job is a target of its own
(``bench/agent.py``); docs/development.md has what each way of reading the stream cost."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from jobqueue.contract import SAMPLING_FIELDS, Job, is_chat
from node_agent.http1 import ConnectError, Http1Pool, HttpError, ReadTimeout

log = logging.getLogger("node_agent.backend")

# Requests running and waiting, by server: vLLM, then llama.cpp's llama-server (with --metrics).
RUNNING_METRICS: Final = ("vllm:num_requests_running", "llamacpp:requests_processing")
WAITING_METRICS: Final = ("vllm:num_requests_waiting", "llamacpp:requests_deferred")
CONNECT_BACKOFF_S: Final = (0.5, 1.0, 2.0)
MAX_LINE_BYTES: Final = 128 * 1024
"""The longest line of the stream the agent reads (aiohttp's line reader stops at the same): an event carries one
token's text, so a longer line is a server gone wrong, not a reply to wait for."""


class BackendError(Exception):
    """A completion that did not finish. ``retryable`` is false when another attempt cannot help (HTTP 4xx)."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class _Unavailable(Exception):
    """HTTP 503 before any output: the server is up but not serving (yet)."""


class BackendNotReady(Exception):
    """The backend did not become ready within the start timeout."""


@dataclass
class Completion:
    text: str = ""
    model: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    ttft_s: float | None = None


@dataclass(frozen=True)
class Load:
    running: int
    waiting: int

    @property
    def busy(self) -> bool:
        return self.running + self.waiting > 0


def parse_load(exposition: str) -> Load | None:
    """Requests running and waiting from a Prometheus exposition; None when the server exports neither."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name in RUNNING_METRICS + WAITING_METRICS:
                found[sample.name] = found.get(sample.name, 0.0) + sample.value
    if not found:
        return None
    running = sum(found.get(name, 0.0) for name in RUNNING_METRICS)
    waiting = sum(found.get(name, 0.0) for name in WAITING_METRICS)
    return Load(int(running), int(waiting))


def parse_chunk(data: str) -> dict[str, Any]:
    """One SSE ``data:`` payload; an ``error`` object sent after HTTP 200 becomes a BackendError."""
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        raise BackendError(f"backend sent a chunk that is not JSON: {data[:200]!r}", retryable=True) from None
    if not isinstance(chunk, dict):
        raise BackendError(f"backend sent a chunk that is not an object: {data[:200]!r}", retryable=True)
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise BackendError(f"backend error during the stream: {message}", retryable=True)
    return chunk


def request_for(model: str, job: Job, max_tokens: int) -> tuple[str, dict[str, Any]]:
    """The model server's path and streamed request body for a job: its input and sampling fields as they are."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": True,
                            "stream_options": {"include_usage": True}}  # fmt: skip
    body.update({name: job[name] for name in SAMPLING_FIELDS if name in job})
    if is_chat(job):
        return "/v1/chat/completions", {**body, "messages": job["messages"]}
    return "/v1/completions", {**body, "prompt": job["prompt"]}


def absorb(result: Completion, chunk: dict[str, Any]) -> str:
    """Add one streamed chunk to the completion; returns the text it carried."""
    result.model = chunk.get("model") or result.model
    if chunk.get("usage"):
        result.usage = {k: int(v) for k, v in chunk["usage"].items() if isinstance(v, int)}
    text = ""
    for choice in chunk.get("choices") or []:
        # /v1/completions streams `text`, /v1/chat/completions a `delta` with the assistant's `content`
        delta = choice.get("delta") or {}
        text += choice.get("text") or (delta.get("content") if isinstance(delta, dict) else "") or ""
        result.finish_reason = choice.get("finish_reason") or result.finish_reason
    result.text += text
    return text


class _Events:
    """The ``sink`` of a streamed completion: the body as it arrives, split into lines, each ``data:`` line
    absorbed into the completion; wants no more once ``data: [DONE]`` came."""

    def __init__(self, result: Completion, started: float, on_text: Callable[[str], None] | None) -> None:
        self.result = result
        self.started = started
        self.on_text = on_text
        self.done = False
        self._pending = b""  # the start of a line whose end has not arrived yet

    def __call__(self, data: bytes) -> bool:
        *lines, self._pending = (self._pending + data).split(b"\n")
        for raw in lines:
            if self._line(raw):
                self.done = True
                return True
        if len(self._pending) > MAX_LINE_BYTES:
            raise BackendError(f"backend sent a line longer than {MAX_LINE_BYTES} bytes", retryable=False)
        return False

    def end(self) -> None:
        """The body ended: a last line with no newline after it."""
        if not self.done and self._pending:
            self.done = self._line(self._pending)

    def _line(self, raw: bytes) -> bool:
        """One line of the stream into the completion; True for ``data: [DONE]``."""
        if not raw.startswith(b"data:"):
            return False
        data = raw[5:].strip().decode(errors="replace")
        if data == "[DONE]":
            return True
        result = self.result
        text = absorb(result, parse_chunk(data))
        if text:
            if result.ttft_s is None:
                result.ttft_s = time.monotonic() - self.started
            if self.on_text is not None:
                self.on_text(text)
        return False


class Backend:
    def __init__(self, base_url: str, connect_timeout_s: float, read_timeout_s: float) -> None:
        self.base_url = base_url
        self.read_timeout_s = read_timeout_s
        # No total limit (a long completion streams for minutes); a silent server is cut after read_timeout_s.
        self._http = Http1Pool(base_url, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str) -> tuple[int, str]:
        response = await self._http.request("GET", path)
        return response.status, response.body.decode(errors="replace")

    async def wait_ready(self, timeout_s: float, poll_s: float = 1.0) -> list[str]:
        """Wait until ``/health`` answers 200 and ``/v1/models`` lists a model; returns the model ids."""
        deadline = time.monotonic() + timeout_s
        last_reason = ""
        while True:
            reason = ""
            try:
                status, text = await self._get("/health")
                if status != HTTPStatus.OK:
                    reason = f"/health answered {status} {text[:80].strip()}"
                else:
                    status, text = await self._get("/v1/models")
                    ids = [m["id"] for m in json.loads(text).get("data", [])] if status == HTTPStatus.OK else []
                    if ids:
                        log.info("backend ready", extra={"backend": self.base_url, "models": ids})
                        return ids
                    reason = f"/v1/models answered {status} with no model"
            except (HttpError, ValueError, KeyError, TypeError, AttributeError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if reason != last_reason:
                log.info("waiting for backend", extra={"backend": self.base_url, "reason": reason})
                last_reason = reason
            if time.monotonic() >= deadline:
                raise BackendNotReady(f"backend {self.base_url} not ready after {timeout_s:.0f} s: {reason}")
            await asyncio.sleep(poll_s)

    async def load(self) -> Load | None:
        """Requests the server itself reports as running or waiting (vLLM ``/metrics``); None if unknown."""
        try:
            status, text = await self._get("/metrics")
        except HttpError:
            return None
        if status != HTTPStatus.OK:
            return None
        return parse_load(text)

    async def complete(
        self,
        model: str,
        job: Job,
        max_tokens: int,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        """Stream one job's completion — a chat job from ``/v1/chat/completions``, a prompt from
        ``/v1/completions`` — and return it whole, or raise BackendError with the reason."""
        path, body = request_for(model, job, max_tokens)
        payload = json.dumps(body).encode()
        for attempt, backoff in enumerate((*CONNECT_BACKOFF_S, None)):
            try:
                return await self._stream(path, model, payload, on_text)
            except (ConnectError, _Unavailable) as exc:
                # Not there yet (refused, or 503 while a restarted server loads its model): wait, don't fail.
                if backoff is None:
                    raise BackendError(
                        f"backend unreachable after {attempt + 1} tries: {exc}", retryable=True
                    ) from None
                log.warning("backend unavailable, retrying", extra={"error": str(exc), "retry_in_s": backoff})
                await asyncio.sleep(backoff)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _stream(self, path: str, model: str, payload: bytes, on_text: Callable[[str], None] | None) -> Completion:
        result = Completion(model=model)
        events = _Events(result, time.monotonic(), on_text)
        try:
            response = await self._http.request("POST", path, payload, sink=events)
        except ConnectError:
            raise  # not connected: complete() waits and tries again
        except ReadTimeout:
            raise BackendError(f"no data from the backend for {self.read_timeout_s} s", retryable=True) from None
        except HttpError as exc:  # closed or malformed mid-answer
            raise BackendError(f"stream broke after {len(result.text)} characters: {exc}", retryable=True) from None
        if response.status != HTTPStatus.OK:
            detail = response.body.decode(errors="replace")[:300]
            if response.status == HTTPStatus.SERVICE_UNAVAILABLE:
                raise _Unavailable(f"HTTP 503: {detail}")
            raise BackendError(
                f"backend answered HTTP {response.status}: {detail}",
                retryable=response.status >= HTTPStatus.INTERNAL_SERVER_ERROR,
            )
        events.end()
        if not events.done and result.finish_reason is None:
            raise BackendError(f"stream ended early after {len(result.text)} characters", retryable=True)
        return result
