"""A stand-in for the Service Quotas API on loopback, for what the local AWS lacks: moto's Service Quotas knows
only the VPC quotas, and answers ``NoSuchResourceException`` for every EC2 one.

It speaks the API's own wire format (JSON 1.1, ``X-Amz-Target: ServiceQuotasV20190624.<Operation>``), so boto3's
real client talks to it: ``GetServiceQuota`` answers the applied value when the account has one and
``NoSuchResourceException`` otherwise, as AWS does for a quota never changed; ``GetAWSDefaultServiceQuota``
answers the default. Any other operation is refused, so a call the stand-in does not know fails the test.

    with QuotaServer(defaults={"L-DB2E81BA": 0}) as server:   # a new account: no G instances
        server.url                                               # AWS_ENDPOINT_URL_SERVICE_QUOTAS
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final

import boto3

PREFIX = "ServiceQuotasV20190624."
# A new account's defaults for the quotas the shapes need: 0 vCPUs of G instances (the increase is a request to
# AWS support), 5 of Standard (the value in the AWS CLI reference's get-aws-default-service-quota example).
NEW_ACCOUNT: Final = {"L-DB2E81BA": 0.0, "L-1216C47A": 5.0}


class QuotaServer:
    def __init__(self, defaults: dict[str, float], applied: dict[str, float] | None = None) -> None:
        self.defaults = dict(defaults)
        self.applied = dict(applied or {})
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def client(self) -> Any:
        """boto3's real Service Quotas client, pointed at this stand-in."""
        return boto3.client("service-quotas", endpoint_url=self.url, region_name="eu-central-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106  # fmt: skip

    def reset(self) -> None:
        self.applied.clear()
        self.calls.clear()

    def __enter__(self) -> QuotaServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def answer(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls.append((operation, body))
        if operation not in {"GetServiceQuota", "GetAWSDefaultServiceQuota"}:
            return 400, {"__type": "UnknownOperationException", "message": f"the stand-in has no {operation}"}
        service, code = body.get("ServiceCode"), body.get("QuotaCode")
        if not service or not code:
            return 400, {"__type": "IllegalArgumentException", "message": "ServiceCode and QuotaCode are required"}
        if operation == "GetServiceQuota" and code in self.applied:
            return 200, {"Quota": self._quota(service, code, self.applied[code])}
        if operation == "GetServiceQuota" or (operation == "GetAWSDefaultServiceQuota" and code not in self.defaults):
            return 400, {"__type": "NoSuchResourceException", "message": f"The request failed because {code} of "
                         f"{service} has no applied value."}  # fmt: skip
        return 200, {"Quota": self._quota(service, code, self.defaults[code])}

    @staticmethod
    def _quota(service: str, code: str, value: float) -> dict[str, Any]:
        return {"ServiceCode": service, "QuotaCode": code, "QuotaName": code, "Value": value, "Unit": "None",
                "Adjustable": True, "GlobalQuota": False}  # fmt: skip

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                target = self.headers.get("X-Amz-Target", "")
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    status, answer = 400, {"__type": "SerializationException", "message": "not JSON"}
                else:
                    if target.startswith(PREFIX):
                        status, answer = outer.answer(target.removeprefix(PREFIX), body)
                    else:
                        status, answer = 400, {"__type": "UnknownOperationException", "message": target}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
