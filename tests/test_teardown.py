"""playbooks/teardown.yml against the local AWS: after the deploy's stacks and functions, nothing of the project is
left but, unless told otherwise, its data; a second run changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.ansible import PLAYBOOK, play, recap
from devstack.deploy import deploy
from devstack.edge import create_user_pool
from devstack.stack import BUCKET, Stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible is installed by `make deps`"),
    pytest.mark.timeout(900),
]


@pytest.fixture
def deployed(fresh_stack: Stack, tmp_path: Path) -> Iterator[Stack]:
    deploy(fresh_stack, create_user_pool(fresh_stack), tmp_path / "deploy", "127.0.0.1")
    s3 = fresh_stack.s3()
    s3.put_object(Bucket=fresh_stack.bucket, Key="replies/00000000-0000-4000-8000-000000000000.json", Body=b"{}")
    s3.put_object(Bucket=f"tinyllama-data-ssm-{account(fresh_stack)}", Key="transfer/x", Body=b"x")
    image = fresh_stack.ec2().create_image(InstanceId=fresh_stack.instance_id, Name="tl-baked-test")["ImageId"]
    fresh_stack.ec2().create_tags(Resources=[image], Tags=[{"Key": "tl-fif", "Value": "gpu-node"}])
    fresh_stack.ssm().put_parameter(Name="/tl-fif/latest_ami_id", Value=image, Type="String", Overwrite=True)
    do_what_motos_cloudformation_does_not(fresh_stack)
    yield fresh_stack


def do_what_motos_cloudformation_does_not(stack: Stack) -> None:
    """moto's CloudFormation has no delete for AWS::EC2::RouteTable and VPC endpoints (it drops them from the
    stack and leaves them in EC2), so the VPC's deletion would then fail on them; on AWS the stack deletes them
    first, as they depend on the VPC. They are removed here, before the teardown, as AWS would in its course."""
    ec2 = stack.ec2()
    vpc = stack.moto.client("cloudformation").describe_stacks(StackName="tl-fif-network")["Stacks"][0]["Outputs"]
    vpc_id = next(o["OutputValue"] for o in vpc if o["OutputKey"] == "VpcId")
    in_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
    endpoints = [e["VpcEndpointId"] for e in ec2.describe_vpc_endpoints(Filters=in_vpc)["VpcEndpoints"]]
    if endpoints:
        ec2.delete_vpc_endpoints(VpcEndpointIds=endpoints)
    for table in ec2.describe_route_tables(Filters=in_vpc)["RouteTables"]:
        if any(a.get("Main") for a in table["Associations"]):
            continue
        for association in table["Associations"]:
            ec2.disassociate_route_table(AssociationId=association["RouteTableAssociationId"])
        ec2.delete_route_table(RouteTableId=table["RouteTableId"])


def account(stack: Stack) -> str:
    return str(stack.moto.client("sts").get_caller_identity()["Account"])


def left(stack: Stack) -> dict[str, Any]:
    cf = stack.moto.client("cloudformation")
    stacks = [s["StackName"] for s in cf.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]
    functions = [f["FunctionName"] for f in stack.moto.client("lambda").list_functions()["Functions"]]
    # every page, without AWS's public parameters (moto lists those once a deploy has read one)
    pages = stack.ssm().get_paginator("describe_parameters").paginate()
    parameters = [p["Name"] for page in pages for p in page["Parameters"] if not p["Name"].startswith("/aws/")]
    # the shared stack's own bucket (devstack.stack.BUCKET) is the tests', not the deploy's
    buckets = [b["Name"] for b in stack.s3().list_buckets()["Buckets"] if b["Name"] != BUCKET]
    images = [i["ImageId"] for i in stack.ec2().describe_images(Owners=["self"])["Images"]]
    return {"stacks": stacks, "functions": functions, "parameters": sorted(parameters), "buckets": sorted(buckets),
            "images": images}  # fmt: skip


def test_teardown_keeps_the_data_unless_told_and_a_second_run_changes_nothing(deployed: Stack) -> None:
    before = left(deployed)
    assert before["stacks"] and before["functions"] and "/tl-fif/redis/router" in before["parameters"]

    kept = play(deployed, "teardown.yml", teardown_delete_data=False)
    assert kept.returncode == 0, kept.stdout[-3000:]
    assert "Kept: the replies bucket" in kept.stdout
    after = left(deployed)
    assert after["stacks"] == [] and after["functions"] == []
    assert after["parameters"] == ["/tl-fif/latest_ami_id"]
    assert after["buckets"] == [deployed.bucket] and len(after["images"]) == 1  # the data

    gone = play(deployed, "teardown.yml", teardown_delete_data=True)
    assert gone.returncode == 0, gone.stdout[-3000:]
    assert left(deployed) == {"stacks": [], "functions": [], "parameters": [], "buckets": [], "images": []}

    again = play(deployed, "teardown.yml", teardown_delete_data=True)
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout[-3000:]
