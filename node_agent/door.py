"""``tl-door``: the check behind the node's own HTTPS door, for nginx's ``auth_request``, on loopback only.

When the operator opens the direct path (``aws_stack_public_endpoint``), nginx on 443 asks this server about every
request before it reaches the model server: ``GET /verify`` with the request's ``Authorization`` header. The
answer follows the router's rules exactly — they are the same code (``lambdas.common.auth``): RS256 only, the
pool's issuer, the app client as audience, expiry with 5 s of leeway, ``token_use`` ``id``, an unknown ``kid``
re-reading the pool's keys at most every 10 s.

    204 + ``X-TL-User: <sub>``  a valid id token: nginx lets the request through (and logs the user)
    401 + ``WWW-Authenticate``  no token: nginx answers 401, with the header
    403                         a token that is not acceptable: nginx answers 403
    503                         the pool's keys cannot be read: nginx answers 500 (auth_request treats any other
                                status as an error) — our problem, never a door left open

Rate limits are nginx's (``limit_req`` keyed on the bearer token and on the client address): nginx applies them
in its preaccess phase, before this check, so that a flood of forged tokens never reaches it.

Variables: TL_DOOR_PORT (9110), TL_JWKS_URL, TL_JWT_ISSUER, TL_JWT_AUDIENCE (required), TL_LOG_LEVEL.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from jobqueue.envconfig import int_between, load, same, setting, url
from lambdas.common.auth import AuthError, JwksCache, KeysUnavailable, Verifier
from node_agent import logs
from node_agent.settings import SETTINGS as AGENT_SETTINGS

log = logging.getLogger("node_agent.door")

HOST: Final = "127.0.0.1"


class DoorError(ValueError):
    """The door's settings are wrong; the message lists each."""


@dataclass(frozen=True)
class DoorSettings:
    port: int = setting(
        "TL_DOOR_PORT", "9110", "Port of the check on 127.0.0.1 (nginx's auth_request target).", int_between(1, 65535)
    )
    jwks_url: str = setting(
        "TL_JWKS_URL", None, "The user pool's signing keys (https://… or s3://… copy).", url("https", "http", "s3")
    )
    issuer: str = setting("TL_JWT_ISSUER", None, "The user pool's issuer URL.")
    audience: str = setting("TL_JWT_AUDIENCE", None, "The app client id (the id token's aud).")
    log_level: str = same(AGENT_SETTINGS["log_level"])


def server(verifier: Verifier, port: int) -> ThreadingHTTPServer:
    """The check, bound to loopback (``port`` 0: any free port)."""

    class Check(BaseHTTPRequestHandler):
        server_version = "tl-door"
        sys_version = ""

        def do_GET(self) -> None:
            if self.path != "/verify":
                self._answer(404, "only /verify")
                return
            try:
                claims = verifier.claims(self.headers.get("Authorization"))
            except AuthError as exc:
                log.info("door refused", extra={"status": exc.status, "reason": exc.reason,
                                                "uri": self.headers.get("X-Original-URI")})  # fmt: skip
                extra = {"WWW-Authenticate": 'Bearer realm="tinyllama-shape"'} if exc.status == 401 else {}  # noqa: PLR2004
                self._answer(exc.status, exc.reason, extra)
                return
            except KeysUnavailable as exc:
                log.error("door cannot verify tokens", extra={"error": str(exc)})
                self._answer(503, "cannot verify tokens right now")
                return
            self._answer(204, "", {"X-TL-User": claims.sub})

        def _answer(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
            body = reason.encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)) if status != 204 else "0")  # noqa: PLR2004
            self.end_headers()
            if status != 204:  # noqa: PLR2004
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass  # the decisions are logged above, as JSON

    return ThreadingHTTPServer((HOST, port), Check)


def main() -> int:
    try:
        values = load(DoorSettings, os.environ, DoorError)
    except DoorError as exc:
        print(f"tl-door: {exc}", file=sys.stderr)
        return 2
    logs.setup(values.log_level)
    verifier = Verifier(JwksCache(values.jwks_url), values.issuer, values.audience)
    door = server(verifier, values.port)
    log.info("door listening", extra={"address": f"{HOST}:{door.server_address[1]}"})
    try:
        door.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        door.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
