"""A stand-in for EC2's instance metadata service (IMDSv2) on loopback: moto serves no instance identity.

It implements the token protocol as EC2 does — ``PUT /latest/api/token`` with a TTL header, then GETs carrying
the token; a GET without it is 401 — and answers the few paths the node reads: ``instance-id``,
``instance-type``, ``placement/region``. Reached through botocore's ``AWS_EC2_METADATA_SERVICE_ENDPOINT``.

An answer may be a function, asked at each request: the local node's IMDS answers the type the instance has in the
local AWS now (``FullStack``), so a resize there is what the node sees at its next boot, as on EC2."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devstack.servers import LOOPBACK

Answer = str | Callable[[], str]


class ImdsServer:
    def __init__(self, instance_id: Answer = "i-0123456789abcdef0", instance_type: Answer = "t3.small",
                 region: Answer = "eu-west-3", host: str = LOOPBACK) -> None:  # fmt: skip
        self.meta = {"instance-id": instance_id, "instance-type": instance_type, "placement/region": region}
        self.host = host
        self.token = secrets.token_urlsafe(16)
        self.tokens_issued = 0
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ImdsServer:
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    imds.tokens_issued += 1
                    self._send(200, imds.token)
                else:
                    self._send(400, "bad token request")

            def do_GET(self) -> None:
                name = self.path.removeprefix("/latest/meta-data/")
                if self.headers.get("X-aws-ec2-metadata-token") != imds.token:
                    self._send(401, "")  # IMDSv2 only: no token, no answer
                elif self.path.startswith("/latest/meta-data/") and name in imds.meta:
                    answer = imds.meta[name]
                    self._send(200, answer() if callable(answer) else answer)
                else:
                    self._send(404, "")

            def _send(self, status: int, body: str) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True, name="imds").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
