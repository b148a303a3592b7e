"""playbooks/resize.yml and bake_ami.yml, run by ansible-playbook against the moto server (the amazon.aws
modules honour AWS_ENDPOINT_URL through boto3), and resize.yml through the local edge's POST /resize."""

from __future__ import annotations

import pytest

from devstack.ansible import PLAYBOOK, play, recap
from devstack.edge import LocalEdgeServer, UserPool, id_token
from devstack.stack import Stack
from tests.support import PASSWORD

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible is installed by `make deps`"),
]


def test_resize_directly_changes_the_type_once_and_restarts_the_node(fresh_stack: Stack) -> None:
    out = play(fresh_stack, "resize.yml", shape="gpu")
    assert out.returncode == 0, out.stdout[-3000:]
    node = fresh_stack.node()
    assert (node["InstanceType"], node["State"]["Name"]) == ("g4dn.xlarge", "running")
    assert recap(out)["changed"] == 1
    again = play(fresh_stack, "resize.yml", shape="gpu")
    assert again.returncode == 0 and recap(again)["changed"] == 0
    assert "already g4dn.xlarge" in again.stdout


def test_resize_refuses_a_held_node_and_a_bad_shape(fresh_stack: Stack) -> None:
    fresh_stack.ec2().create_tags(Resources=[fresh_stack.instance_id], Tags=[{"Key": "tl-hold", "Value": "budget"}])
    held = play(fresh_stack, "resize.yml", shape="gpu")
    assert held.returncode != 0 and "held by the budget killer" in held.stdout
    assert fresh_stack.node()["InstanceType"] == "t3.small"
    bad = play(fresh_stack, "resize.yml", shape="huge")
    assert bad.returncode != 0 and "Say which shape: -e shape=builder|gpu" in bad.stdout


def test_bake_images_the_node_publishes_the_id_and_keeps_the_newest(fresh_stack: Stack) -> None:
    ec2 = fresh_stack.ec2()
    ids = []
    for _ in range(3):
        out = play(fresh_stack, "bake_ami.yml", bake_converge=False, bake_keep=2)
        assert out.returncode == 0, out.stdout[-3000:]
        ids.append(fresh_stack.ssm().get_parameter(Name="/tl-fif/latest_ami_id")["Parameter"]["Value"])
    assert len(set(ids)) == 3
    baked = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:tl-fif", "Values": ["gpu-node"]}])["Images"]
    assert sorted(i["ImageId"] for i in baked) == sorted(ids[1:])
    tags = {t["Key"]: t["Value"] for t in next(i for i in baked if i["ImageId"] == ids[-1])["Tags"]}
    assert tags["tl-baked"].endswith("Z") and tags["env"] == "tinyllama"


def test_resize_through_the_api_as_an_admin(shared_stack: Stack, pool: UserPool, edge: LocalEdgeServer) -> None:
    """Last in the module: the pool fixture lives in the shared moto, which the tests above reset."""
    admin = id_token(shared_stack, pool, "dan", PASSWORD)
    # the local AWS is a new account, without G instances: refused with the quota to request, nothing stopped
    refused = play(shared_stack, "resize.yml", shape="gpu", via="api", api_url=edge.url + "/", token=admin)
    assert refused.returncode != 0 and "--quota-code L-DB2E81BA --desired-value 4" in refused.stdout
    assert shared_stack.node()["InstanceType"] == "t3.small"
    shared_stack.moto.quotas.applied["L-DB2E81BA"] = 4  # granted
    out = play(shared_stack, "resize.yml", shape="gpu", via="api", api_url=edge.url + "/", token=admin)
    assert out.returncode == 0, out.stdout[-3000:]
    assert '"status": "resized"' in out.stdout and shared_stack.node()["InstanceType"] == "g4dn.xlarge"
    user = id_token(shared_stack, pool, "ann", PASSWORD)
    refused = play(shared_stack, "resize.yml", shape="builder", via="api", api_url=edge.url, token=user)
    assert refused.returncode != 0 and "Status code was 403" in refused.stdout
    assert shared_stack.node()["InstanceType"] == "g4dn.xlarge"
