"""``tl serve``: an OpenAI-compatible door on the user's own machine, for the tools people already use.

It listens on 127.0.0.1 only and answers ``GET /v1/models``, ``POST /v1/chat/completions`` and
``POST /v1/completions`` (``stream`` true or false) by turning each request into ``POST /infer`` and following
``GET /result/{id}`` with the user's session (``tl login``; renewed by itself). A sleeping node is waited for, not
refused: a stream gets its HTTP 200 and a first chunk at once, then SSE comments with the node's state
(``: starting, about 70 s left``) until the tokens flow; a request without ``stream`` waits up to ``--wait`` seconds,
then answers 504 with the reason.

Any API key is accepted: the door is the user's own, on loopback. Loopback is no wall against the user's browser,
though — any web page can post to ``localhost``, and DNS rebinding can make a hostile name resolve to 127.0.0.1 —
so the door answers only requests whose ``Host`` is its own address and port, sends no CORS headers (a cross-origin
page cannot read an answer, and a request that carries another ``Origin`` is refused before anything is sent on),
and a browser's state-changing call must carry this start's key (``X-TL-Key``), which only a page it served knows.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, TextIO

import httpx

from tlcli.api import Api, ApiError, watch
from tlcli.openai_compat import OpenAIError, Shaper, from_api, infer_body, job_failed, models
from tlcli.tokens import LoginError

DEFAULT_PORT: Final = 8765
"""Also the port of ``tl login``'s callback, which the app client lists (``http://localhost:8765/callback``)."""
MAX_BODY_BYTES: Final = 65_536
"""Four times the API's own limit, whose answer then names the field."""
KEEPALIVE_S: Final = 5.0
"""Seconds between SSE comments while a stream waits: well under the 60 s idle timeouts of common proxies."""
ROUTES: Final = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}
GUI_DIR: Final = Path(__file__).resolve().parent / "gui"
GUI_FILES: Final = {"/gui/app.js": "app.js", "/gui/style.css": "style.css"}
CONTENT_TYPES: Final = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
                        "css": "text/css; charset=utf-8"}  # fmt: skip
PAGE_HEADERS: Final = {
    # the page runs only its own script and talks only to this door; it cannot be framed (clickjacking)
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class Door:
    """The server and what every request needs. ``start`` runs it on a thread (tests), ``serve`` in the
    foreground (``tl serve``)."""

    def __init__(
        self,
        api: Api,
        port: int = DEFAULT_PORT,
        *,
        wait_s: float = 300,
        stream_s: float = 900,
        poll_s: float = 0.3,
        keepalive_s: float = KEEPALIVE_S,
        client_id: str | None = None,
        auth_domain: str | None = None,
        log: TextIO = sys.stderr,
    ) -> None:
        self.api = api
        self.client_id = client_id
        self.auth_domain = (auth_domain or "").rstrip("/") or None
        self.wait_s, self.stream_s, self.poll_s, self.keepalive_s = wait_s, stream_s, poll_s, keepalive_s
        self.key = secrets.token_urlsafe(24)
        self.log = log
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.hosts = frozenset({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})
        self.origins = frozenset(f"http://{host}" for host in self.hosts)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gui_url(self) -> str:
        """Where the GUI is opened: ``localhost``, the origin of the app client's callback URL."""
        return f"http://localhost:{self.port}/"

    def gui_config(self) -> dict[str, Any]:
        return {"api": self.api.base, "clientId": self.client_id, "authDomain": self.auth_domain,
                "redirectUri": f"{self.gui_url}callback", "key": self.key}  # fmt: skip

    def start(self) -> Door:
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        try:
            self.server.serve_forever(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.server.server_close()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread:
            self._thread.join(5)


def _handler(door: Door) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.door = door
    return Handler


class _Handler(BaseHTTPRequestHandler):
    door: Door
    protocol_version = "HTTP/1.1"
    server_version = "tl-serve"

    # ------------------------------------------------------------------ the guard

    def _refusal(self) -> OpenAIError | None:
        """A request this door does not answer: another Host (DNS rebinding), another Origin (a web page), a
        browser's state-changing call without this start's key."""
        door = self.door
        if self.headers.get("Host") not in door.hosts:
            return OpenAIError(403, f"this door answers only to Host {door.url.removeprefix('http://')}",
                               type="permission_error", code="forbidden_host")  # fmt: skip
        origin = self.headers.get("Origin")
        if origin is not None and origin not in door.origins:
            return OpenAIError(403, "cross-origin requests are refused", type="permission_error", code="cross_origin")
        browser = origin is not None or self.headers.get("Sec-Fetch-Site") is not None
        acts = self.command != "GET" or self.path.startswith("/gui/status")
        if (browser or self.path.startswith("/gui/")) and acts and not self._keyed():
            return OpenAIError(403, "a browser's request needs the page's key", type="permission_error", code="no_key")
        return None

    def _keyed(self) -> bool:
        return secrets.compare_digest(self.headers.get("X-TL-Key", "").encode(), self.door.key.encode())

    def _api(self) -> Api:
        """The GUI's calls carry the page's key and the browser's own sign-in: they go with that token; every
        other client's API key is ignored and the door's session (``tl login``) is used."""
        bearer = self.headers.get("Authorization", "")
        if self._keyed() and bearer.startswith("Bearer ") and bearer.count(".") == 2:  # noqa: PLR2004
            return Api(self.door.api.base, bearer.removeprefix("Bearer ").strip(), client=self.door.api.http)
        return self.door.api

    # ------------------------------------------------------------------ routes

    def do_OPTIONS(self) -> None:  # a CORS preflight: never granted
        self._error(OpenAIError(403, "cross-origin requests are refused", type="permission_error", code="cross_origin"))

    def do_GET(self) -> None:
        refused = self._refusal()
        if refused:
            self._error(refused)
        elif self.path == "/v1/models":
            self._json(200, models())
        elif self.path.split("?", 1)[0] in ("/", "/callback") or self.path in GUI_FILES:
            self._static(GUI_FILES.get(self.path, "index.html"))
        elif self.path == "/gui/config.json":
            self._json(200, self.door.gui_config(), {"Cache-Control": "no-store"})
        elif self.path == "/gui/status":
            self._status()
        else:
            self._error(OpenAIError(404, f"no route GET {self.path[:100]}", code="not_found"))

    def do_POST(self) -> None:
        refused = self._refusal()
        kind = ROUTES.get(self.path)
        if refused:
            self._drain()
            self._error(refused)
            return
        if self.path == "/gui/token":
            self._token()
            return
        if kind is None:
            self._drain()
            self._error(OpenAIError(404, f"no route POST {self.path[:100]}", code="not_found"))
            return
        try:
            request = self._body()
            body = infer_body(kind, request)
            job_id, starting_eta = self._submit(body)
        except OpenAIError as exc:
            self._error(exc)
            return
        shaper = Shaper(kind, job_id)
        if request.get("stream"):
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            self._stream(shaper, job_id, starting_eta, include_usage)
        else:
            self._whole(shaper, job_id)

    # ------------------------------------------------------------------ a request's life

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise OpenAIError(413, f"body: must be at most {MAX_BODY_BYTES} bytes, got {length}", param="body")
        try:
            data = json.loads(self.rfile.read(length) or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise OpenAIError(400, f"body: not valid JSON ({exc})", param="body") from None
        if not isinstance(data, dict):
            raise OpenAIError(400, "body: must be a JSON object", param="body")
        return data

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _submit(self, body: dict[str, Any]) -> tuple[str, float | None]:
        """``POST /infer``: the job's id, and when the node is starting, the monotonic time it should serve by."""
        try:
            status, data, headers = self._api().call("POST", "/infer", body)
        except LoginError as exc:
            raise OpenAIError(401, str(exc), type="authentication_error", code="invalid_api_key") from None
        except ApiError as exc:
            if exc.status in (401, 403):
                raise OpenAIError(401, str(exc), type="authentication_error", code="invalid_api_key") from None
            raise OpenAIError(502, str(exc), type="api_error", code="unreachable") from None
        if status != HTTPStatus.ACCEPTED:
            raise from_api(status, data, headers.get("retry-after"))
        eta = data.get("eta")
        starting = data.get("status") == "starting" and isinstance(eta, int | float)
        return str(data["id"]), (time.monotonic() + float(eta)) if starting else None  # type: ignore[arg-type]

    def _whole(self, shaper: Shaper, job_id: str) -> None:
        try:
            for update in watch(self._api(), job_id, timeout_s=self.door.wait_s, poll_s=self.door.poll_s):
                if update.status == "done":
                    self._json(200, shaper.whole(update.data.get("reply") or {}))
                    return
                if update.status in ("failed", "expired"):
                    self._error(job_failed(update.data))
                    return
                if update.status == "timeout":
                    self._error(OpenAIError(
                        504, f"no answer within {self.door.wait_s:.0f} s (job {job_id} is still on its way: "
                        f"`tl result {job_id}`); a streaming request waits longer", type="timeout", code="timeout",
                    ))  # fmt: skip
                    return
        except (ApiError, LoginError) as exc:
            self._error(OpenAIError(502, f"lost the job {job_id}: {exc}", type="api_error"))

    def _stream(self, shaper: Shaper, job_id: str, serve_by: float | None, include_usage: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Request-Id", job_id)
        self.end_headers()
        try:
            self._event(shaper.chunk(first=True))
            said = time.monotonic()
            for update in watch(self._api(), job_id, timeout_s=self.door.stream_s, poll_s=self.door.poll_s):
                if update.new_text and update.status in ("running", "done"):
                    self._event(shaper.chunk(update.new_text))
                    said = time.monotonic()
                if update.status == "done":
                    reply = update.data.get("reply") or {}
                    shaper.model = reply.get("model") or shaper.model
                    self._event(shaper.chunk(finish=reply.get("finish_reason") or "stop"))
                    if include_usage:
                        self._event(shaper.usage_chunk(reply))
                    break
                if update.status in ("failed", "expired", "timeout"):
                    self._event(job_failed(update.data).body())
                    break
                if time.monotonic() - said >= self.door.keepalive_s:
                    self._comment(waiting(update.status, update.data, serve_by))
                    said = time.monotonic()
            self._write(b"data: [DONE]\n\n")
            self._write(b"")
        except (ApiError, LoginError) as exc:
            self._event(OpenAIError(502, f"lost the job {job_id}: {exc}", type="api_error").body())
            self._write(b"data: [DONE]\n\n")
            self._write(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away; the job goes on and its reply is kept

    # ------------------------------------------------------------------ the GUI

    def _static(self, name: str) -> None:
        payload = (GUI_DIR / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPES[name.rsplit(".", 1)[-1]])
        self.send_header("Content-Length", str(len(payload)))
        for header, value in PAGE_HEADERS.items():
            self.send_header(header, value)
        self.end_headers()
        self.wfile.write(payload)

    def _status(self) -> None:
        """``GET /status`` of the API with the browser's token (same origin: no CORS needed on any port)."""
        try:
            status, data, _ = self._api().call("GET", "/status")
        except (ApiError, LoginError) as exc:
            code = exc.status if isinstance(exc, ApiError) else 401
            self._error(OpenAIError(401 if code in (401, 403) else 502, str(exc), type="api_error"))
            return
        self._json(status, data)

    def _token(self) -> None:
        """The sign-in's last step: the page's code and PKCE verifier (or its refresh token) traded at the hosted
        UI's token endpoint, from here, so that the browser needs no CORS from Cognito."""
        door = self.door
        try:
            request = self._body()
        except OpenAIError as exc:
            self._error(exc)
            return
        if not door.auth_domain or not door.client_id:
            self._error(OpenAIError(400, "sign-in is not configured (TL_COGNITO_DOMAIN, TL_COGNITO_CLIENT_ID)"))
            return
        grant = request.get("grant_type")
        form = {"client_id": door.client_id, "grant_type": str(grant)}
        if grant == "authorization_code":
            form.update(code=str(request.get("code", "")), code_verifier=str(request.get("code_verifier", "")),
                        redirect_uri=door.gui_config()["redirectUri"])  # fmt: skip
        elif grant == "refresh_token":
            form["refresh_token"] = str(request.get("refresh_token", ""))
        else:
            self._error(OpenAIError(400, "grant_type: must be authorization_code or refresh_token", param="grant_type"))
            return
        try:
            answer = door.api.http.post(f"{door.auth_domain}/oauth2/token", data=form, timeout=15)
            granted = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            self._error(OpenAIError(502, f"the sign-in service did not answer: {exc}", type="api_error"))
            return
        if answer.status_code != 200 or "id_token" not in granted:  # noqa: PLR2004
            reason = granted.get("error_description") or granted.get("error") or answer.status_code
            self._error(OpenAIError(400, f"the sign-in service refused: {reason}", type="authentication_error"))
            return
        self._json(200, {k: granted[k] for k in ("id_token", "refresh_token", "expires_in") if k in granted},
                   {"Cache-Control": "no-store"})  # fmt: skip

    # ------------------------------------------------------------------ the wire

    def _event(self, data: dict[str, Any]) -> None:
        self._write(f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode())

    def _comment(self, text: str) -> None:
        self._write(f": {text}\n\n".encode())

    def _write(self, data: bytes) -> None:
        """One chunk of a chunked body; ``b""`` ends it."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _json(self, status: int, data: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, error: OpenAIError) -> None:
        self._json(error.status, error.body(), {"Retry-After": error.retry_after} if error.retry_after else None)

    def log_message(self, format: str, *args: Any) -> None:
        print(f"tl serve: {self.command} {self.path[:100]} {format % args}", file=self.door.log, flush=True)


def waiting(status: str, data: dict[str, Any], serve_by: float | None) -> str:
    """The SSE comment while a stream waits: what the node is doing, and for a cold start the time left."""
    if status == "starting" and serve_by is not None:
        left = serve_by - time.monotonic()
        return f"starting, about {left:.0f} s left" if left >= 1 else "starting, taking longer than usual"
    if status == "unavailable":
        return f"waiting: the API says {data.get('code')} ({data.get('message', '')})"
    return status
