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
from typing import Any, Final

import boto3
import httpx
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


class LoginError(Exception):
    """Login did not give a token; the message says why and what to do."""


def token_file() -> Path:
    explicit = os.environ.get("TL_TOKEN_FILE")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "tinyllama-shape" / "token.json"


@dataclass(frozen=True)
class Tokens:
    """What a login gives: the id token the API takes, and Cognito's refresh token that renews it (30 days by
    default, the identity stack's ``RefreshTokenValidity``) with the app client that issued it."""

    id_token: str
    refresh_token: str | None = None
    client_id: str | None = None


def save_token(tokens: Tokens | str, path: Path | None = None) -> Path:
    """Keep the tokens in a file only the user can read (0600, created so: never readable in between)."""
    kept = Tokens(tokens) if isinstance(tokens, str) else tokens
    target = path or token_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as out:
        record = {"id_token": kept.id_token, "refresh_token": kept.refresh_token, "client_id": kept.client_id}
        json.dump({**{k: v for k, v in record.items() if v}, "saved_at": time.time()}, out)
    return target


def claims_unverified(token: str) -> dict[str, Any]:
    """The payload of a JWT, not verified (the API verifies; this is only to tell the user it expired)."""
    try:
        payload = token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return {}


def load_tokens(path: Path | None = None) -> Tokens:
    source = path or token_file()
    try:
        data = json.loads(source.read_text())
        return Tokens(str(data["id_token"]), data.get("refresh_token"), data.get("client_id"))
    except (OSError, ValueError, KeyError, TypeError):
        raise LoginError(f"not logged in (no token in {source}): run `tl login`") from None


def expires_within(token: str, seconds: float) -> bool:
    exp = claims_unverified(token).get("exp")
    return isinstance(exp, int | float) and exp < time.time() + seconds


def load_token(path: Path | None = None) -> str:
    """The saved id token as it is, for scripts (``tl token``): an expired one is an error, not renewed."""
    token = load_tokens(path).id_token
    if expires_within(token, 0):
        raise LoginError("the saved token has expired: run `tl login` again (or any tl command, which renews it)")
    return token


RENEW_MARGIN_S: Final = 120
"""Renew an id token this long before it expires, so that no request leaves with one about to lapse."""


def region_of(id_token: str) -> str | None:
    """The user pool's region, from the token's issuer (``https://cognito-idp.<region>.amazonaws.com/<pool>``)."""
    host = urllib.parse.urlsplit(str(claims_unverified(id_token).get("iss", ""))).hostname or ""
    parts = host.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "cognito-idp" else None  # noqa: PLR2004


def renew(tokens: Tokens, region: str | None = None) -> Tokens:
    """A new id token from the refresh token: InitiateAuth's REFRESH_TOKEN_AUTH flow, which the app client allows
    (``ALLOW_REFRESH_TOKEN_AUTH``) and which needs no secret and no browser, whichever way the user logged in.
    Cognito documents it for clients without refresh token rotation, as ours:
    https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-refresh-token.html
    """
    if not tokens.refresh_token or not tokens.client_id:
        raise LoginError("the id token has expired and there is no refresh token to renew it: run `tl login`")
    cognito = boto3.client(
        "cognito-idp", region_name=region or region_of(tokens.id_token), config=Config(signature_version=UNSIGNED)
    )
    try:
        answer = cognito.initiate_auth(
            ClientId=tokens.client_id,
            AuthFlow="REFRESH_TOKEN_AUTH",
            AuthParameters={"REFRESH_TOKEN": tokens.refresh_token},
        )
    except ClientError as exc:
        reason = exc.response.get("Error", {}).get("Message", str(exc))
        raise LoginError(f"Cognito did not renew the session ({reason}): run `tl login`") from None
    except BotoCoreError as exc:
        raise LoginError(f"cannot reach Cognito to renew the session ({exc}): try again, or run `tl login`") from None
    result = answer.get("AuthenticationResult") or {}
    if "IdToken" not in result:
        raise LoginError("Cognito did not renew the session (no id token in its answer): run `tl login`")
    return Tokens(str(result["IdToken"]), result.get("RefreshToken") or tokens.refresh_token, tokens.client_id)


class Session:
    """The saved login, renewed when its id token is about to expire or the API says it has; what ``tl`` and
    ``tl serve`` send. Thread-safe: ``tl serve`` answers requests on many threads."""

    def __init__(self, path: Path | None = None, region: str | None = None) -> None:
        self.path = path or token_file()
        self.region = region
        self._lock = threading.Lock()
        self._tokens: Tokens | None = None

    def token(self) -> str:
        with self._lock:
            tokens = self._tokens or load_tokens(self.path)
            if expires_within(tokens.id_token, RENEW_MARGIN_S):
                tokens = self._renew(tokens)
            self._tokens = tokens
            return tokens.id_token

    def renew(self, rejected: str) -> str:
        """A fresh id token after the API refused ``rejected`` as expired (another thread may have renewed it)."""
        with self._lock:
            tokens = self._tokens or load_tokens(self.path)
            if tokens.id_token == rejected:
                tokens = self._renew(tokens)
            self._tokens = tokens
            return tokens.id_token

    def _renew(self, tokens: Tokens) -> Tokens:
        renewed = renew(tokens, self.region)
        save_token(renewed, self.path)
        return renewed


def password_login(client_id: str, username: str, password: str, region: str | None = None) -> Tokens:
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
    result = answer["AuthenticationResult"]
    return Tokens(str(result["IdToken"]), result.get("RefreshToken"), client_id)


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
) -> Tokens:
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
    granted = answer.json()
    return Tokens(str(granted["id_token"]), granted.get("refresh_token"), client_id)
