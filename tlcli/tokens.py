"""Getting and keeping an id token: Cognito's hosted UI (authorization code + PKCE) or USER_PASSWORD_AUTH."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError


class LoginError(Exception):
    """Login did not give a token; the message says why and what to do."""


def token_file() -> Path:
    explicit = os.environ.get("TL_TOKEN_FILE")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "tinyllama-shape" / "token.json"


def save_token(id_token: str, path: Path | None = None) -> Path:
    target = path or token_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"id_token": id_token, "saved_at": time.time()}, out)
    return target


def claims_unverified(token: str) -> dict[str, Any]:
    """The payload of a JWT, not verified (the API verifies; this is only to tell the user it expired)."""
    try:
        payload = token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return {}


def load_token(path: Path | None = None) -> str:
    source = path or token_file()
    try:
        token = str(json.loads(source.read_text())["id_token"])
    except (OSError, ValueError, KeyError):
        raise LoginError(f"not logged in (no token in {source}): run `tl login`") from None
    exp = claims_unverified(token).get("exp")
    if isinstance(exp, int | float) and exp < time.time():
        raise LoginError("the saved token has expired: run `tl login` again")
    return token


def password_login(client_id: str, username: str, password: str, region: str | None = None) -> str:
    """USER_PASSWORD_AUTH: for scripts and tests (the app client must allow this flow)."""
    cognito = boto3.client("cognito-idp", region_name=region, config=Config(signature_version=UNSIGNED))
    try:
        answer = cognito.initiate_auth(
            ClientId=client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": password},
        )
    except ClientError as exc:
        raise LoginError(f"Cognito refused the login: {exc.response.get('Error', {}).get('Message', exc)}") from None
    if "AuthenticationResult" not in answer:
        raise LoginError(f"Cognito asks for a challenge ({answer.get('ChallengeName')}): finish it in the hosted UI")
    return str(answer["AuthenticationResult"]["IdToken"])


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(64)[:96]
        return cls(verifier, challenge_of(verifier))


def challenge_of(verifier: str) -> str:
    """S256 code challenge (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class _Callback(BaseHTTPRequestHandler):
    result: dict[str, str]

    def do_GET(self) -> None:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        type(self).result.update(query)
        ok = "code" in query
        self.send_response(200 if ok else 400)
        self.send_header("content-type", "text/plain; charset=utf-8")
        self.end_headers()
        self.wfile.write(b"Logged in; you can close this tab." if ok else b"Login failed; see the terminal.")

    def log_message(self, format: str, *args: Any) -> None:
        return


def hosted_ui_login(
    domain: str,
    client_id: str,
    *,
    open_browser: Callable[[str], object],
    port: int = 8765,
    timeout_s: float = 300,
) -> str:
    """Authorization code with PKCE: open the hosted UI, take the code on localhost, trade it for tokens.

    ``port`` must match a callback URL of the app client (``http://localhost:<port>/callback``).
    """
    pkce = Pkce.new()
    state = secrets.token_urlsafe(24)
    redirect = f"http://localhost:{port}/callback"
    handler: type[_Callback] = type("Callback", (_Callback,), {"result": {}})
    server = HTTPServer(("127.0.0.1", port), handler)
    server.timeout = 0.5
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect,
            "scope": "openid email",
            "state": state,
            "code_challenge": pkce.challenge,
            "code_challenge_method": "S256",
        }
    )
    base = domain.rstrip("/")
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set() and "code" not in handler.result and "error" not in handler.result:
            server.handle_request()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        open_browser(f"{base}/oauth2/authorize?{query}")
        thread.join(timeout_s)
    finally:
        stop.set()
        thread.join(2)
        server.server_close()
    result = handler.result
    if "error" in result:
        raise LoginError(f"the hosted UI answered {result['error']}: {result.get('error_description', '')}")
    if "code" not in result:
        raise LoginError(f"no answer from the hosted UI within {timeout_s:.0f} s")
    if result.get("state") != state:
        raise LoginError("the callback's state does not match: login aborted")
    answer = httpx.post(
        f"{base}/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "client_id": client_id,
            "code": result["code"],
            "redirect_uri": redirect,
            "code_verifier": pkce.verifier,
        },
        timeout=10,
    )
    if answer.status_code != 200:  # noqa: PLR2004
        raise LoginError(f"the token endpoint answered {answer.status_code}: {answer.text[:200]}")
    return str(answer.json()["id_token"])
