"""Who the node is: IMDSv2 (token first) at botocore's AWS_EC2_METADATA_SERVICE_ENDPOINT.

No instance metadata service runs here (moto does not serve instance identity), so a loopback server that
implements the IMDSv2 token protocol stands in for it: PUT /latest/api/token, then GETs with the token header.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devstack.procs import wait_until
from devstack.stack import Stack, StandInServer
from node_agent.instance import InstanceError, imds_identity

TOKEN = "token-abc"


class Imds(BaseHTTPRequestHandler):
    instance_id = "i-0123456789abcdef0"
    tokens_issued = 0

    def do_PUT(self) -> None:
        if self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            type(self).tokens_issued += 1
            self._send(200, TOKEN)
        else:
            self._send(400, "bad token request")

    def do_GET(self) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            self._send(401, "")  # IMDSv2 only: no token, no answer
        elif self.path == "/latest/meta-data/instance-id":
            self._send(200, self.instance_id)
        elif self.path == "/latest/meta-data/placement/region":
            self._send(200, "eu-west-3")
        else:
            self._send(404, "")

    def _send(self, status: int, body: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def imds() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Imds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_identity_comes_from_imdsv2_with_a_session_token(imds: str) -> None:
    identity = asyncio.run(imds_identity(imds))
    assert identity.instance_id == Imds.instance_id
    assert identity.region == "eu-west-3"
    assert Imds.tokens_issued >= 1


def test_unreachable_metadata_says_what_to_set() -> None:
    with pytest.raises(InstanceError, match="set TL_INSTANCE_ID"):
        asyncio.run(imds_identity("http://127.0.0.1:9", timeout_s=0.2, tries=1))


@pytest.mark.slow
def test_agent_without_instance_id_asks_imds(stack: Stack, standin: StandInServer, imds: str) -> None:
    stack.start_agent(standin.url, TL_INSTANCE_ID="", AWS_EC2_METADATA_SERVICE_ENDPOINT=imds)
    wait_until(lambda: (stack.queue().heartbeat() or {}).get("instance_id") == Imds.instance_id, 10, "heartbeat")


@pytest.mark.slow
def test_agent_that_must_stop_but_cannot_identify_its_instance_exits_with_the_reason(
    stack: Stack, standin: StandInServer
) -> None:
    agent = stack.start_agent(
        standin.url,
        wait=False,
        TL_INSTANCE_ID="",
        TL_STOP_MODE="stop",
        AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:9",
    )
    assert agent.wait(30) == 2
    assert "set TL_INSTANCE_ID" in agent.log_path.read_text()
