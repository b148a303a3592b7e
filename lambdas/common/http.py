"""API Gateway HTTP API (payload format 2.0) events in, proxy responses out."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Final

JSON_HEADERS: Final = {"content-type": "application/json"}


class HttpError(Exception):
    """An answer other than success: status, a message the caller can act on, and extra fields/headers."""

    def __init__(
        self,
        status: int,
        message: str,
        /,
        *,
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.fields = fields

    def response(self) -> dict[str, Any]:
        return respond(self.status, {"message": self.message, **self.fields}, self.headers)


@dataclass(frozen=True)
class Request:
    """The parts of a v2 event the functions use."""

    route: str
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    path_params: dict[str, str]
    request_id: str
    source_ip: str
    raw_body: bytes | None = field(repr=False)
    body_error: str = ""

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Request:
        context = event.get("requestContext") or {}
        http = context.get("http") or {}
        body = event.get("body")
        raw: bytes | None = None
        error = ""
        if body is not None:
            if event.get("isBase64Encoded"):
                try:
                    raw = base64.b64decode(body, validate=True)
                except (binascii.Error, ValueError):
                    error = "body: not valid base64"
            else:
                raw = str(body).encode("utf-8", "surrogatepass")
        return cls(
            route=str(event.get("routeKey") or f"{http.get('method', '')} {event.get('rawPath', '')}"),
            method=str(http.get("method", "")),
            path=str(event.get("rawPath", "")),
            headers={str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()},
            query={str(k): str(v) for k, v in (event.get("queryStringParameters") or {}).items()},
            path_params={str(k): str(v) for k, v in (event.get("pathParameters") or {}).items()},
            request_id=str(context.get("requestId", "")),
            source_ip=str(http.get("sourceIp", "")),
            raw_body=raw,
            body_error=error,
        )


def respond(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {**JSON_HEADERS, **(headers or {})},
        "body": json.dumps(body, ensure_ascii=False, separators=(",", ":")),
    }


def disabled() -> dict[str, Any]:
    """What every route but /ping answers while TL_DISABLE_LAM_ROUTER is set."""
    return respond(503, {"status": "disabled", "message": "the router is switched off"})


def is_http_event(event: object) -> bool:
    return isinstance(event, dict) and event.get("version") == "2.0" and "requestContext" in event
