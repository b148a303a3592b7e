"""An ASGI app that stands where API Gateway stands: it checks the JWT like the HTTP API's authorizer, applies
the CORS rule, builds a payload-2.0 event, calls the function's real ``handler`` and writes one JSON access-log
line per request (``requestId, ip, route, status, latencyMs``), the same fields as the API's access log.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import importlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qsl

from lambdas import routes
from lambdas.common.auth import Claims, JwksCache, Verifier, authenticate
from lambdas.common.clients import ROLE_CREDENTIALS
from lambdas.common.http import HttpError
from lambdas.common.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[dict[str, Any], object], dict[str, Any]]

ALLOWED_ORIGIN: Final = re.compile(r"^http://localhost(:[0-9]{1,5})?$")
MAX_BODY: Final = 1024 * 1024
"""The edge's own limit (API Gateway's is 10 MB); the functions set tighter ones."""
CORS_HEADERS: Final = "authorization,content-type"
EXPOSED_HEADERS: Final = "x-request-id,retry-after"


def load_handler(function: str) -> Handler:
    module = importlib.import_module(f"lambdas.{function}.handler")
    handler: Handler = module.handler
    return handler


ROLES_VARIABLE: Final = "TL_EDGE_ROLE_CREDENTIALS"
"""JSON ``{function: {AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN}}``: each function's own role, as
Lambda gives it (a strict local AWS); a function not named runs on the edge's own credentials."""


class LocalEdge:
    def __init__(
        self,
        verifier: Verifier | None,
        handlers: dict[str, Handler] | None = None,
        roles: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.verifier = verifier
        self.handlers = handlers or {r.function: load_handler(r.function) for r in routes.ROUTES}
        self.roles = roles or {}

    @classmethod
    def from_env(cls) -> LocalEdge:
        s = Settings.from_env()
        s.require("jwks_url", "jwt_issuer", "jwt_audience")
        roles = json.loads(os.environ.get(ROLES_VARIABLE) or "{}")
        return cls(Verifier(JwksCache(s.jwks_url), s.jwt_issuer, s.jwt_audience, s.jwt_token_use), roles=roles)

    def _invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        """The function's handler, its AWS clients built on its own role (``clients.ROLE_CREDENTIALS``)."""
        token = ROLE_CREDENTIALS.set(self.roles.get(function))
        try:
            return self.handlers[function](event, None)
        finally:
            ROLE_CREDENTIALS.reset(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        headers = _headers(scope)
        ip = (scope.get("client") or ("", 0))[0]
        method, path = scope["method"], scope["path"]
        found = routes.match(method, path)
        route_key = found[0].key if found else "-"
        if method == "OPTIONS" and "access-control-request-method" in headers:
            status, out_headers, body = _preflight(headers, path)
        elif found is None:
            status, out_headers, body = _json(404, {"message": "Not Found"})
        else:
            status, out_headers, body = await self._answer(scope, receive, headers, found, request_id)
        origin = headers.get("origin", "")
        if ALLOWED_ORIGIN.match(origin):
            out_headers.update(
                {"access-control-allow-origin": origin, "access-control-expose-headers": EXPOSED_HEADERS}
            )
        out_headers.setdefault("vary", "origin")
        out_headers["apigw-requestid"] = request_id
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in out_headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": body})
        access = {"requestId": request_id, "ip": ip, "route": route_key, "status": status,
                  "latencyMs": round((time.perf_counter() - started) * 1000, 2)}  # fmt: skip
        print(json.dumps(access, separators=(",", ":")), file=sys.stdout, flush=True)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        headers: dict[str, str],
        found: tuple[routes.Route, dict[str, str]],
        request_id: str,
    ) -> tuple[int, dict[str, str], bytes]:
        route, params = found
        body = await _read_body(receive)
        if body is None:
            return _json(413, {"message": f"body: must be at most {MAX_BODY} bytes"})
        claims: Claims | None = None
        if route.auth:
            if self.verifier is None:
                return _json(500, {"message": "the local edge has no authorizer configured"})
            try:
                claims = await asyncio.to_thread(authenticate, self.verifier, headers.get("authorization"))
            except HttpError as exc:
                refused = exc.response()
                return refused["statusCode"], refused["headers"], refused["body"].encode()
        event = build_event(route, params, scope, headers=headers, body=body, request_id=request_id, claims=claims)
        response = await asyncio.to_thread(self._invoke, route.function, event)
        out = {str(k).lower(): str(v) for k, v in (response.get("headers") or {}).items()}
        raw = response.get("body") or ""
        payload = base64.b64decode(raw) if response.get("isBase64Encoded") else str(raw).encode()
        return int(response.get("statusCode", 200)), out, payload


def _headers(scope: Scope) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        merged[key] = f"{merged[key]},{text}" if key in merged else text
    return merged


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _json(status: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": "application/json"}, json.dumps(body).encode()


def _preflight(headers: dict[str, str], path: str) -> tuple[int, dict[str, str], bytes]:
    origin = headers.get("origin", "")
    methods = routes.allowed_methods(path)
    if not ALLOWED_ORIGIN.match(origin) or not methods:
        return _json(403, {"message": "CORS: origin or route not allowed"})
    return (
        204,
        {
            "access-control-allow-methods": ",".join([*methods, "OPTIONS"]),
            "access-control-allow-headers": CORS_HEADERS,
            "access-control-max-age": "600",
        },
        b"",
    )


def build_event(
    route: routes.Route,
    params: dict[str, str],
    scope: Scope,
    *,
    headers: dict[str, str],
    body: bytes,
    request_id: str,
    claims: Claims | None,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload-format-2.0 event, as AWS builds it."""
    ip = (scope.get("client") or ("", 0))[0]
    now = dt.datetime.now(dt.UTC)
    query = scope.get("query_string", b"").decode("latin-1")
    try:
        text: str | None = body.decode("utf-8") if body else None
        encoded = False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.key,
        "rawPath": scope["path"],
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": headers.get("host", "localhost"),
            "http": {
                "method": scope["method"],
                "path": scope["path"],
                "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
                "sourceIp": ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route.key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if query:
        event["queryStringParameters"] = dict(parse_qsl(query, keep_blank_values=True))
    if params:
        event["pathParameters"] = params
    if text is not None:
        event["body"] = text
    if claims is not None:
        event["requestContext"]["authorizer"] = {
            "jwt": {
                "claims": {
                    "sub": claims.sub,
                    "cognito:username": claims.username,
                    "cognito:groups": "[" + " ".join(claims.groups) + "]",
                },
                "scopes": None,
            }
        }
    return event
