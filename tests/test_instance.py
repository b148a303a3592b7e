"""Who the node is: IMDSv2 (token first) at botocore's AWS_EC2_METADATA_SERVICE_ENDPOINT.

No instance metadata service runs here (moto does not serve instance identity): ``devstack.imds`` stands in
for it, with the IMDSv2 token protocol (PUT /latest/api/token, then GETs with the token header).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from devstack.imds import ImdsServer
from devstack.procs import wait_until
from devstack.stack import Stack, StandInServer
from node_agent.instance import InstanceError, imds_identity


@pytest.fixture
def imds() -> Iterator[ImdsServer]:
    server = ImdsServer().start()
    yield server
    server.stop()


def test_identity_comes_from_imdsv2_with_a_session_token(imds: ImdsServer) -> None:
    identity = asyncio.run(imds_identity(imds.url))
    assert identity.instance_id == imds.meta["instance-id"]
    assert identity.region == "eu-west-3"
    assert imds.tokens_issued >= 1


def test_unreachable_metadata_says_what_to_set() -> None:
    with pytest.raises(InstanceError, match="set TL_INSTANCE_ID"):
        asyncio.run(imds_identity("http://127.0.0.1:9", timeout_s=0.2, tries=1))


@pytest.mark.slow
def test_agent_without_instance_id_asks_imds(stack: Stack, standin: StandInServer, imds: ImdsServer) -> None:
    stack.start_agent(standin.url, TL_INSTANCE_ID="", AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url)
    iid = imds.meta["instance-id"]
    wait_until(lambda: (stack.queue().heartbeat() or {}).get("instance_id") == iid, 10, "heartbeat")


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
