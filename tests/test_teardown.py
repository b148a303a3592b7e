"""playbooks/teardown.yml against the local AWS: after the deploy's stacks and functions, nothing of the project is
left but, unless told otherwise, its data; a second run changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.ansible import PLAYBOOK, recap
from devstack.deploy import NOTHING_LEFT, deploy, leftovers, teardown
from devstack.edge import create_user_pool
from devstack.stack import Stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible is installed by `make deps`"),
    pytest.mark.timeout(900),
]


@pytest.fixture
def deployed(fresh_stack: Stack, tmp_path: Path) -> Iterator[Stack]:
    # the shared stack's own instance is the tests', not the deploy's: only the deploy's may be left to find
    fresh_stack.ec2().terminate_instances(InstanceIds=[fresh_stack.instance_id])
    deploy(fresh_stack, create_user_pool(fresh_stack), tmp_path / "deploy", "127.0.0.1")
    s3 = fresh_stack.s3()
    s3.put_object(Bucket=fresh_stack.bucket, Key="replies/00000000-0000-4000-8000-000000000000.json", Body=b"{}")
    s3.put_object(Bucket=f"tinyllama-data-ssm-{account(fresh_stack)}", Key="transfer/x", Body=b"x")
    image = fresh_stack.ec2().create_image(InstanceId=fresh_stack.instance_id, Name="tl-baked-test")["ImageId"]
    fresh_stack.ec2().create_tags(Resources=[image], Tags=[{"Key": "tl-fif", "Value": "gpu-node"}])
    fresh_stack.ssm().put_parameter(Name="/tl-fif/latest_ami_id", Value=image, Type="String", Overwrite=True)
    yield fresh_stack


def account(stack: Stack) -> str:
    return str(stack.moto.client("sts").get_caller_identity()["Account"])


def test_teardown_keeps_the_data_unless_told_and_a_second_run_changes_nothing(deployed: Stack, tmp_path: Path) -> None:
    before = leftovers(deployed)
    assert before["stacks"] and before["functions"] and "/tl-fif/redis/router" in before["parameters"]
    assert before["instances"] and "/aws/lambda/tl-fif-router" in before["log_groups"]

    kept = teardown(deployed, tmp_path / "kept.log", delete_data=False)
    assert "Kept: the replies bucket" in kept.stdout
    after = leftovers(deployed)
    assert after["stacks"] == [] and after["functions"] == [] and after["instances"] == []
    assert after["log_groups"] == []
    assert after["parameters"] == ["/tl-fif/latest_ami_id"]
    assert after["buckets"] == [deployed.bucket] and len(after["images"]) == 1  # the data

    teardown(deployed, tmp_path / "gone.log", delete_data=True)
    assert leftovers(deployed) == NOTHING_LEFT

    again = teardown(deployed, tmp_path / "again.log", delete_data=True)
    assert recap(again)["changed"] == 0, again.stdout[-3000:]
