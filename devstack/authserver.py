"""A stand-in for Cognito's hosted UI and OAuth 2.0 endpoints (moto has neither), in front of moto's user pool.

``GET /oauth2/authorize`` shows a sign-in form for one app client and its callback URLs; the form's ``POST /login``
checks the user name and password with moto's Cognito (USER_PASSWORD_AUTH), so the tokens it hands out are the
pool's real tokens, which the edge and the router verify; ``POST /oauth2/token`` trades a code for them, checking
PKCE (S256, RFC 7636), the client and the redirect URI, and renews them (``grant_type=refresh_token``), as Cognito's
token endpoint does. What Cognito would refuse is refused: an unknown client, a redirect URI that is not one of
the client's callback URLs, a code used twice or past its five minutes, a wrong verifier.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from botocore.exceptions import ClientError

from devstack.edge import UserPool
from devstack.stack import Stack

CODE_TTL_S: Final = 300
"""An authorization code is good for five minutes, once (Cognito's token endpoint)."""


@dataclass
class _Pending:
    client_id: str
    redirect_uri: str
    challenge: str
    tokens: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


def challenge_s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


class AuthServer:
    """``start()`` on a free port of ``host``; ``url`` is what the hosted UI's domain is in the configuration."""

    def __init__(self, stack: Stack, pool: UserPool, callbacks: list[str], host: str = "127.0.0.1") -> None:
        self.stack, self.pool = stack, pool
        self.callbacks = list(callbacks)
        self.codes: dict[str, _Pending] = {}
        self.sign_ins: list[str] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"

    def start(self) -> AuthServer:
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> AuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what the endpoints decide

    def check_request(self, query: dict[str, str]) -> str | None:
        """Why an authorization request is refused, or None."""
        if query.get("client_id") != self.pool.client_id:
            return "unknown client_id"
        if query.get("redirect_uri") not in self.callbacks:
            return "redirect_mismatch"
        if query.get("response_type") != "code":
            return "unsupported_response_type"
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return "PKCE with S256 is required"
        return None

    def sign_in(self, query: dict[str, str], username: str, password: str) -> str | None:
        """The code for these credentials, or None when moto's Cognito refuses them."""
        cognito = self.stack.moto.client("cognito-idp")
        try:
            answer = cognito.initiate_auth(ClientId=self.pool.client_id, AuthFlow="USER_PASSWORD_AUTH",
                                           AuthParameters={"USERNAME": username, "PASSWORD": password})  # fmt: skip
        except ClientError:
            return None
        result = answer["AuthenticationResult"]
        tokens = {**_granted(result), "refresh_token": result["RefreshToken"]}
        code = secrets.token_urlsafe(18)
        with self._lock:
            self.codes[code] = _Pending(query["client_id"], query["redirect_uri"], query["code_challenge"], tokens)
        self.sign_ins.append(username)
        return code

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("client_id") != self.pool.client_id:
            return 400, {"error": "invalid_client"}
        if form.get("grant_type") == "refresh_token":
            return self._refresh(form.get("refresh_token", ""))
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        return self._exchange(form)

    def _refresh(self, refresh_token: str) -> tuple[int, dict[str, Any]]:
        cognito = self.stack.moto.client("cognito-idp")
        try:
            answer = cognito.initiate_auth(ClientId=self.pool.client_id, AuthFlow="REFRESH_TOKEN_AUTH",
                                           AuthParameters={"REFRESH_TOKEN": refresh_token})  # fmt: skip
        except ClientError:
            return 400, {"error": "invalid_grant"}
        return 200, _granted(answer["AuthenticationResult"])

    def _exchange(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            pending = self.codes.pop(form.get("code", ""), None)
        if pending is None or time.monotonic() - pending.at > CODE_TTL_S:
            return 400, {"error": "invalid_grant"}
        if form.get("redirect_uri") != pending.redirect_uri:
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri does not match"}
        if challenge_s256(form.get("code_verifier", "")) != pending.challenge:
            return 400, {"error": "invalid_grant", "error_description": "code_verifier does not match"}
        return 200, pending.tokens


def _granted(result: dict[str, Any]) -> dict[str, Any]:
    return {"id_token": result["IdToken"], "access_token": result["AccessToken"], "expires_in": result["ExpiresIn"],
            "token_type": "Bearer"}  # fmt: skip


FORM: Final = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in</title></head>
<body><h1>Sign in</h1><p id="error">{error}</p>
<form method="post" action="/login?{query}">
<label>User name <input id="username" name="username" autocomplete="username"></label>
<label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
<button id="signin" type="submit">Sign in</button></form></body></html>"""


def _handler(auth: AuthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parts.query))
            if parts.path != "/oauth2/authorize":
                self._send(404, "text/plain", b"not found")
                return
            refused = auth.check_request(query)
            if refused:
                self._send(400, "text/plain", refused.encode())
                return
            self._form(parts.query, "")

        def do_POST(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            query = dict(urllib.parse.parse_qsl(parts.query))
            if parts.path == "/login":
                if auth.check_request(query):
                    self._send(400, "text/plain", b"invalid request")
                    return
                code = auth.sign_in(query, form.get("username", ""), form.get("password", ""))
                if code is None:
                    self._form(parts.query, "Incorrect username or password.")
                    return
                target = (
                    f"{query['redirect_uri']}?{urllib.parse.urlencode({'code': code, 'state': query.get('state', '')})}"
                )
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif parts.path == "/oauth2/token":
                status, body = auth.token(form)
                self._send(status, "application/json", json.dumps(body).encode())
            else:
                self._send(404, "text/plain", b"not found")

        def _form(self, query: str, error: str) -> None:
            page = FORM.format(error=html.escape(error), query=html.escape(query, quote=True))
            self._send(200, "text/html; charset=utf-8", page.encode())

        def _send(self, status: int, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
