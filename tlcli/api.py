"""The API as ``tl`` and ``tl serve`` use it: calls with the session's id token (renewed when the API says it has
expired), and one way to follow a job from ``POST /infer`` to its reply."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tlcli.tokens import Session

EXIT_OK, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
TRANSIENT = frozenset({429, 502, 503, 504})
"""Answers of GET /result that say "not now", not "never": waited out while a job is followed."""
SETTLED = frozenset({"done", "failed", "expired"})


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Api:
    """``token`` is fixed (a string), or a ``Session`` that renews itself."""

    def __init__(self, base_url: str, token: str | Session | None, client: httpx.Client | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.http = client or httpx.Client(timeout=30)
        self.auth = token

    def _token(self) -> str | None:
        return self.auth.token() if isinstance(self.auth, Session) else self.auth

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any], httpx.Headers]:
        token = self._token()
        status, data, headers = self._send(method, path, body, token)
        if status == 403 and isinstance(self.auth, Session) and token and "expired" in str(data.get("message")):  # noqa: PLR2004
            # expired in flight (a clock ahead of ours): renew once and send again
            status, data, headers = self._send(method, path, body, self.auth.renew(token))
        if status in (401, 403):
            raise ApiError(status, f"{data.get('message', 'not allowed')}: run `tl login`", EXIT_USAGE)
        return status, data, headers

    def _send(
        self, method: str, path: str, body: dict[str, Any] | None, token: str | None
    ) -> tuple[int, dict[str, Any], httpx.Headers]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        try:
            response = self.http.request(method, self.base + path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach {self.base}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = {"message": response.text[:200]}
        return response.status_code, data if isinstance(data, dict) else {"message": str(data)[:200]}, response.headers


@dataclass
class Update:
    """One look at a job: its status, the text that is new since the last look, and the API's whole answer.
    ``status`` is ``queued``, ``starting``, ``running``, a settled one, or ``unavailable`` (the API said "not now":
    ``data`` has its status code and message) and ``timeout``."""

    status: str
    new_text: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    restarted: bool = False
    """The reply's text does not continue what was shown (a retried attempt started over): ``new_text`` is all."""


def watch(api: Api, job_id: str, *, timeout_s: float, poll_s: float) -> Iterator[Update]:
    """Follow a job by polling ``GET /result/{id}`` until it settles (the last update) or ``timeout_s`` passes
    (``timeout``). The text of a running job comes as it grows; the settled update carries what the reply adds
    to what was shown. A 404 or other refusal raises ``ApiError``."""
    started = time.monotonic()
    shown = ""
    backoff = poll_s
    while (elapsed := time.monotonic() - started) < timeout_s:
        code, data, headers = api.call("GET", f"/result/{job_id}")
        if code in TRANSIENT:
            # The job is safe (in Redis or parked in S3); the API could not say how it is right now — a node
            # booting, the queue a moment away, a throttle. Ask again, more slowly, until the timeout.
            yield Update("unavailable", data={"code": code, **data}, elapsed_s=elapsed)
            backoff = min(max(backoff * 2, 0.5), 5.0)
            time.sleep(float(headers.get("retry-after", backoff)) if code == 429 else backoff)  # noqa: PLR2004
            continue
        backoff = poll_s
        if code != 200:  # noqa: PLR2004
            raise ApiError(code, f"result not available ({code}): {data.get('message', data)}")
        status = str(data["status"])
        if status in SETTLED:
            output = str((data.get("reply") or {}).get("output", ""))
            # the reply's text normally continues what was shown; a retried attempt may have started over
            continues = output.startswith(shown)
            yield Update(status, output[len(shown) :] if continues else output, data, elapsed, restarted=not continues)
            return
        text = str(data.get("text", "")) if status == "running" else ""
        new = text[len(shown) :] if text.startswith(shown) else ""
        shown += new
        yield Update(status, new, data, elapsed)
        time.sleep(poll_s)
    yield Update("timeout", data={"message": f"job {job_id} not finished after {timeout_s:.0f} s"}, elapsed_s=timeout_s)
