"""Helpers for the function tests: signing keys served as a real JWKS over HTTP, tokens, and v2 events."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://cognito-idp.eu-central-1.amazonaws.com/eu-central-1_TESTPOOL"
AUDIENCE = "test-app-client"
PASSWORD = "Local-pass-1!"
"""Password of the users the tests create in the local Cognito pool."""


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    bits: int = 2048
    private: rsa.RSAPrivateKey = field(init=False)

    def __post_init__(self) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=self.bits)

    def jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": _b64(numbers.n), "e": _b64(numbers.e)}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, **overrides: Any) -> str:
        """A Cognito-shaped id token signed with this key (cryptography's RS256, not the code under test)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": str(uuid.uuid4()),
            "iss": ISSUER,
            "aud": AUDIENCE,
            "token_use": "id",
            "iat": now,
            "exp": now + 3600,
            "cognito:username": "alice",
        }
        headers = {"kid": self.kid, **overrides.pop("headers", {})}
        claims.update(overrides)
        for name in [k for k, v in claims.items() if v is None]:
            del claims[name]
        return jwt.encode(claims, self.private, algorithm="RS256", headers=headers)


class JwksServer:
    """Serves ``{"keys": [...]}`` on a loopback port, like Cognito's /.well-known/jwks.json; counts reads."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = keys
        self.reads = 0
        self.broken = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.reads += 1
                if outer.broken:
                    self.send_response(500)
                    self.end_headers()
                    return
                body = json.dumps({"keys": [k.jwk() for k in outer.keys]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def start(self) -> JwksServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def v2_event(
    method: str,
    path: str,
    *,
    body: str | bytes | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    route_key: str | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload-2.0 event shaped like AWS's documented example."""
    all_headers = {"content-type": "application/json", "user-agent": "pytest", **(headers or {})}
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    path_params = {}
    key = route_key
    if key is None:
        key = f"{method} {path}"
        if path.startswith("/result/"):
            key, path_params = f"{method} /result/{{id}}", {"id": path.removeprefix("/result/")}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": key,
        "rawPath": path,
        "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
        "headers": all_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api-id",
            "domainName": "id.execute-api.eu-central-1.amazonaws.com",
            "domainPrefix": "id",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "pytest",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": key,
            "stage": "$default",
            "time": "23/Nov/2026:10:00:00 +0000",
            "timeEpoch": int(time.time() * 1000),
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = query
    if path_params:
        event["pathParameters"] = path_params
    if isinstance(body, bytes):
        event["body"] = base64.b64encode(body).decode()
        event["isBase64Encoded"] = True
    elif body is not None:
        event["body"] = body
    return event


def container_check(name: str) -> str:
    """The text of ``molecule/checks/<name>.py``, a script a scenario's testinfra check runs inside the container
    (``host.run("python3 -c %s …", container_check(name), …)``; molecule/checks/README.md)."""
    return (Path(__file__).resolve().parent.parent / "molecule" / "checks" / f"{name}.py").read_text()


def setenv(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str], **more: str) -> None:
    """Set every variable of ``env`` and ``more`` for the test; monkeypatch undoes it after."""
    for name, value in {**env, **more}.items():
        monkeypatch.setenv(name, value)


def body_of(response: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(response["body"]))


def emf_metrics(text: str) -> list[dict[str, Any]]:
    """The EMF documents among printed lines."""
    found = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            found.append(json.loads(line))
    return found


# The attack corpus: tokens every door must refuse with 403 (the router's, the node's), built from the pool's
# key and a stranger's key of the same kid.
def none_token() -> str:
    return jwt.encode({"sub": "x", "iss": ISSUER, "aud": AUDIENCE, "token_use": "id", "exp": 2**40, "iat": 1},
                      None, algorithm="none")  # fmt: skip


def _tampered(token: str) -> str:
    head, payload, sig = token.split(".")
    claims = jwt.utils.base64url_decode(payload).replace(b'"alice"', b'"mallo"')
    return ".".join([head, jwt.utils.base64url_encode(claims).decode(), sig])


def _hs256_with_public_key(key: SigningKey) -> str:
    """The classic confusion attack, built by hand (PyJWT itself refuses to sign it)."""
    head = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    payload = key.token().split(".")[1].encode()
    signing_input = head + b"." + payload
    signature = hmac.new(key.public_pem(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


ATTACKS = {
    "alg none": lambda k, s: none_token(),
    "HS256 signed with the public key": lambda k, s: _hs256_with_public_key(k),
    "expired": lambda k, s: k.token(exp=int(time.time()) - 60),
    "not yet valid (nbf)": lambda k, s: k.token(nbf=int(time.time()) + 600),
    "issued in the future (iat)": lambda k, s: k.token(iat=int(time.time()) + 600),
    "wrong issuer": lambda k, s: k.token(iss="https://cognito-idp.eu-central-1.amazonaws.com/other-pool"),
    "wrong audience": lambda k, s: k.token(aud="another-client"),
    "access token (token_use)": lambda k, s: k.token(token_use="access"),
    "no token_use": lambda k, s: k.token(token_use=None),
    "no exp": lambda k, s: k.token(exp=None),
    "unknown kid": lambda k, s: k.token(headers={"kid": "key-2"}),
    "signed by another key": lambda k, s: s.token(),
    "tampered payload": lambda k, s: _tampered(k.token()),
    "truncated signature": lambda k, s: k.token()[:-20],
    "not a JWT": lambda k, s: "not.a.jwt",
    "garbage": lambda k, s: "🦙" * 10,
    "RS512 header": lambda k, s: jwt.encode({"sub": "x"}, k.private, algorithm="RS512", headers={"kid": k.kid}),
    "huge": lambda k, s: "a" * 9000,
}
