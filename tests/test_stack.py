"""The CloudFormation templates of the aws_stack role: every IAM policy walked for the node-control rule, and the
stacks before the Lambdas deployed by the role itself (ansible-playbook playbooks/stack.yml) into the moto server."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from devstack.ansible import PLAYBOOK, ansible_env, play
from devstack.cfn_moto import MOTO_CUTS, MOTO_OUTPUT_CUTS, load
from devstack.deploy import BEFORE_THE_LAMBDAS, LOCAL_BASE_IMAGE, TEMPLATES, moto_templates
from devstack.edge import create_user_pool
from devstack.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
NODE_CONTROL = ("ec2:StartInstances", "ec2:StopInstances", "ec2:ModifyInstanceAttribute")
TAG_CONDITION = "aws:ResourceTag/env"


def templates() -> dict[str, dict[str, Any]]:
    return {path.stem: load(path.read_text()) for path in sorted(TEMPLATES.glob("*.yml"))}


def statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every policy statement of the template's roles, managed policies and resource policies."""
    found = []
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if not resource["Type"].startswith("AWS::IAM::") and not resource["Type"].endswith("Policy"):
            continue
        documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        documents += [props[k] for k in ("PolicyDocument", "AssumeRolePolicyDocument") if k in props]
        for document in documents:
            for statement in document.get("Statement", []):
                found.append((name, statement))
    return found


def node_control_problems(name: str, statement: dict[str, Any]) -> list[str]:
    """Why a statement breaks the rule: node start/stop/modify only with a tag condition, and never by wildcard."""
    if statement.get("Effect") != "Allow":
        return []
    actions = statement.get("Action", [])
    actions = [actions] if isinstance(actions, str) else actions
    problems = []
    for action in actions:
        covered = [a for a in NODE_CONTROL if fnmatch.fnmatchcase(a.lower(), action.lower())]
        if not covered:
            continue
        if action not in NODE_CONTROL:
            problems.append(f"{name}: wildcard action {action!r} grants {covered}")
        condition = json.dumps(statement.get("Condition", {}))
        if TAG_CONDITION not in condition:
            problems.append(f"{name}: {action} without a {TAG_CONDITION} condition")
    return problems


def test_every_template_policy_keeps_node_control_to_tagged_instances() -> None:
    checked = 0
    for stack, template in templates().items():
        for name, statement in statements(template):
            assert not node_control_problems(f"{stack}/{name}", statement)
            checked += 1
    assert checked > 15  # the walk found the policies


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ({"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}, "wildcard action 'ec2:*'"),
        ({"Effect": "Allow", "Action": ["ec2:Stop*"], "Resource": "*",
          "Condition": {"StringEquals": {TAG_CONDITION: "tinyllama"}}}, "wildcard action 'ec2:Stop*'"),
        ({"Effect": "Allow", "Action": "*", "Resource": "*"}, "wildcard action '*'"),
        ({"Effect": "Allow", "Action": ["ec2:StopInstances"], "Resource": "*"}, "without a aws:ResourceTag/env"),
    ],
)  # fmt: skip
def test_the_walk_catches_what_it_must(statement: dict[str, Any], expected: str) -> None:
    problems = node_control_problems("Bad", statement)
    assert any(expected in p for p in problems), problems


def test_a_deny_or_unrelated_statement_is_fine() -> None:
    assert node_control_problems("x", {"Effect": "Deny", "Action": "ec2:*", "Resource": "*"}) == []
    assert node_control_problems("x", {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}) == []


# Resource types moto's CloudFormation accepts but does not create (only a warning in its log): checked in AWS only.
MOTO_SKIPS = {
    "network": {"EgressOnlyGateway"},  # AWS::EC2::EgressOnlyInternetGateway
    "identity": {"UserPool", "CliClient", "HostedUiDomain", "AdminGroup"},  # AWS::Cognito::*
}
# Behind a switch that is off by default.
# What EC2 takes in a security group rule's description (EC2 API reference, IpRange / Ipv6Range / UserIdGroupPair
# Description): "a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&;{}!$*", up to 255 characters. moto takes anything.
RULE_DESCRIPTION = re.compile(r"^[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]{0,255}$")


def rules(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every security group rule of the template, inline or under an Fn::If (both branches)."""
    found = []
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        items = props.get("SecurityGroupIngress", []) + props.get("SecurityGroupEgress", [])
        if resource["Type"] in ("AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"):
            items = [props]
        for item in items if isinstance(items, list) else [items]:
            branches = item["Fn::If"][1:] if isinstance(item, dict) and "Fn::If" in item else [item]
            found += [(name, b) for b in branches if isinstance(b, dict) and "Ref" not in b]
    return found


def test_every_security_group_rule_description_is_one_ec2_accepts() -> None:
    described = [(f"{stack}.{name}", rule["Description"]) for stack, template in templates().items()
                 for name, rule in rules(template) if "Description" in rule]  # fmt: skip
    assert len(described) >= 8  # the node's and the functions' rules at least
    bad = [(where, text) for where, text in described if not RULE_DESCRIPTION.match(text)]
    assert bad == []
    assert not RULE_DESCRIPTION.match("every request's id token")  # the check can fail: an apostrophe


def test_the_node_admits_443_only_with_the_public_door() -> None:
    node = templates()["node"]
    assert "SecurityGroupIngress" not in node["Resources"]["NodeSecurityGroup"]["Properties"]  # no rule but these
    ingress = {name: r for name, r in node["Resources"].items() if r["Type"] == "AWS::EC2::SecurityGroupIngress"}
    door = {name for name, r in ingress.items() if r["Properties"]["FromPort"] == 443}
    assert door == {"PublicDoorIPv4", "PublicDoorIPv6"}
    assert {ingress[name]["Condition"] for name in door} == {"PublicDoor"}
    assert node["Conditions"]["PublicDoor"] == {"Fn::Equals": [{"Ref": "PublicEndpoint"}, "true"]}
    assert node["Parameters"]["PublicEndpoint"]["Default"] == "false"


SWITCHED_OFF = {"queue": {"Redis", "RedisSecurityGroup", "RedisSubnets", "RedisMemoryAlarm"},
                "node": {"PublicDoorIPv4", "PublicDoorIPv6"}}  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible is installed by `make deps`")
def test_the_stacks_before_the_lambdas_deploy_into_moto(fresh_stack: Stack, tmp_path: Path) -> None:
    adapted_dir = tmp_path / "templates"
    removed = moto_templates(adapted_dir)
    known = [f"{r}.{p}" if p else r for s, r, p, _ in MOTO_CUTS] + [f"Outputs.{o}" for _, o, _ in MOTO_OUTPUT_CUTS]
    assert sorted(cut for cuts in removed.values() for cut in cuts) == sorted(known)

    # moto's CloudFormation makes no user pool (MOTO_SKIPS): the JWKS copied is that of one made with boto3
    jwks_url = create_user_pool(fresh_stack).jwks_url
    # no baked image yet (a fresh account): the node starts from the public base image
    out = play(fresh_stack, "stack.yml", aws_stack_templates=str(adapted_dir), aws_stack_jwks_url=jwks_url,
               aws_stack_base_image_parameter=LOCAL_BASE_IMAGE)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    # a new account has no G quota: the deploy goes on (the node is created as t3.small) and says what to request
    assert "Quota: g4dn.xlarge needs 4 vCPUs" in out.stdout
    assert "--quota-code L-DB2E81BA --desired-value 4" in out.stdout

    cf = fresh_stack.moto.client("cloudformation")
    outputs = {}
    for stack in BEFORE_THE_LAMBDAS:
        described = cf.describe_stacks(StackName=f"tl-fif-{stack}")["Stacks"][0]
        assert described["StackStatus"] == "CREATE_COMPLETE"
        assert {"Key": "env", "Value": "tinyllama"} in described["Tags"]
        outputs[stack] = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
        listed = cf.list_stack_resources(StackName=f"tl-fif-{stack}")["StackResourceSummaries"]
        deployed = {r["LogicalResourceId"] for r in listed if r["ResourceType"]}
        expected = set(load((adapted_dir / f"{stack}.yml").read_text())["Resources"])
        expected -= MOTO_SKIPS.get(stack, set()) | SWITCHED_OFF.get(stack, set())
        assert deployed == expected, stack

    ec2 = fresh_stack.ec2()
    vpc = ec2.describe_vpcs(VpcIds=[outputs["network"]["VpcId"]])["Vpcs"][0]
    assert vpc["CidrBlock"] == "10.20.0.0/22" == outputs["network"]["VpcCidr"]  # aws.yml's TL_PING_CIDRS reads it
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    assert sorted(s["CidrBlock"] for s in subnets) == ["10.20.0.0/24", "10.20.1.0/24", "10.20.2.0/24"]
    assert not ec2.describe_nat_gateways(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["NatGateways"]

    node = ec2.describe_instances(InstanceIds=[outputs["node"]["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert node["InstanceType"] == "t3.small" and {"Key": "env", "Value": "tinyllama"} in node["Tags"]
    base = check_the_base_image(fresh_stack, node)
    group = ec2.describe_security_groups(GroupIds=[outputs["node"]["NodeSecurityGroupId"]])["SecurityGroups"][0]
    # Nothing from the internet: only the functions' group, on Redis's port (node queue mode); no Elastic IP.
    lambda_group = outputs["network"]["LambdaSecurityGroupId"]
    assert [(p["FromPort"], p["ToPort"], [g["GroupId"] for g in p["UserIdGroupPairs"]], p["IpRanges"],
             p["Ipv6Ranges"]) for p in group["IpPermissions"]] == [(6379, 6379, [lambda_group], [], [])]  # fmt: skip
    assert not ec2.describe_addresses()["Addresses"]
    assert outputs["node"]["PrivateIp"] == node["PrivateIpAddress"]

    iam = fresh_stack.moto.client("iam")
    role = outputs["node"]["NodeRoleArn"].rsplit("/", 1)[1]
    policy: Any = iam.get_role_policy(RoleName=role, PolicyName="node")["PolicyDocument"]
    if isinstance(policy, str):  # moto keeps a CloudFormation-made inline policy as the Python repr of the dict
        policy = ast.literal_eval(unquote(policy))
    control = next(s for s in policy["Statement"] if s.get("Sid") == "StopStartRetypeTaggedOnly")
    assert control["Condition"] == {"StringEquals": {TAG_CONDITION: "tinyllama"}}
    logs = fresh_stack.moto.client("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/tl-fif-")["logGroups"]
    assert len(logs) == 6 and {g["retentionInDays"] for g in logs} == {30}

    # the public door is closed by default, and the node knows the keys its check would read (the pool's issuer
    # and client come from the identity stack's outputs, which moto's CloudFormation does not make: MOTO_SKIPS)
    pages = fresh_stack.ssm().get_paginator("get_parameters_by_path").paginate(Path="/tl-fif/node/")
    node_settings = {p["Name"].rsplit("/", 1)[1]: p["Value"] for page in pages for p in page["Parameters"]}
    assert node_settings["TL_PUBLIC_ENDPOINT"] == "false" and node_settings["TL_JWKS_URL"] == jwks_url
    assert {k: node_settings.get(k) for k in ("TL_JWT_ISSUER", "TL_JWT_AUDIENCE")} == {
        k: outputs["identity"].get(o) for k, o in (("TL_JWT_ISSUER", "Issuer"), ("TL_JWT_AUDIENCE", "ClientId"))
    }

    check_the_inventory(fresh_stack, node["InstanceId"], outputs["node"]["ReplyBucket"])
    check_the_functions_copies(fresh_stack, outputs["node"]["ReplyBucket"])

    check_a_second_run_keeps_the_node(fresh_stack, adapted_dir, jwks_url, outputs, node=node, base=base)


def check_a_second_run_keeps_the_node(
    fresh_stack: Stack, adapted_dir: Path, jwks_url: str, outputs: dict[str, Any], *, node: Any, base: str
) -> None:
    cf, ec2 = fresh_stack.moto.client("cloudformation"), fresh_stack.ec2()
    # A second run leaves the same resources. (AWS answers "No updates are to be performed" and the module reports
    # no change; moto re-applies most stacks on update_stack and reports changed, so the count is not asserted.)
    # Meanwhile bake_ami.yml published a baked image: the running node keeps its own (a new ImageId would replace
    # the instance); only a new node would start from the baked one.
    baked = fresh_stack.ec2().create_image(InstanceId=node["InstanceId"], Name="tl-baked")["ImageId"]
    fresh_stack.ssm().put_parameter(Name="/tl-fif/latest_ami_id", Value=baked, Type="String", Overwrite=True)
    again = play(fresh_stack, "stack.yml", aws_stack_templates=str(adapted_dir), aws_stack_jwks_url=jwks_url,
                 aws_stack_base_image_parameter=LOCAL_BASE_IMAGE)  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:]
    assert f"The node starts from {base}" in again.stdout and "from the node stack" in again.stdout
    for stack in BEFORE_THE_LAMBDAS:
        described = cf.describe_stacks(StackName=f"tl-fif-{stack}")["Stacks"][0]
        assert {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])} == outputs[stack], stack
    tagged = ec2.describe_instances(Filters=[{"Name": "tag:env", "Values": ["tinyllama"]}])["Reservations"]
    assert [i["InstanceId"] for r in tagged for i in r["Instances"]].count(node["InstanceId"]) == 1


def check_the_base_image(stack: Stack, node: Any) -> str:
    """A fresh account's node starts from the public base image, its root device the image's (Amazon Linux's
    /dev/xvda here, Ubuntu's /dev/sda1 on AWS), at least 30 GiB. Returns the image."""
    base = stack.ssm().get_parameter(Name=LOCAL_BASE_IMAGE)["Parameter"]["Value"]
    assert node["ImageId"] == base
    resources = stack.moto.client("cloudformation").list_stack_resources(StackName="tl-fif-node")
    template_id = next(r["PhysicalResourceId"] for r in resources["StackResourceSummaries"]
                       if r["ResourceType"] == "AWS::EC2::LaunchTemplate")  # fmt: skip
    versions = stack.ec2().describe_launch_template_versions(LaunchTemplateId=template_id)["LaunchTemplateVersions"]
    mappings = versions[-1]["LaunchTemplateData"]["BlockDeviceMappings"]
    assert [(m["DeviceName"], m["Ebs"]["VolumeSize"]) for m in mappings] == [("/dev/xvda", 30)]
    return str(base)


@pytest.mark.slow
@pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible is installed by `make deps`")
def test_a_node_created_as_a_gpu_on_a_new_account_stops_the_deploy_before_anything_is_made(
    fresh_stack: Stack, tmp_path: Path
) -> None:
    out = play(fresh_stack, "stack.yml", aws_stack_templates=str(tmp_path), aws_stack_instance_type="g4dn.xlarge",
               aws_stack_base_image_parameter=LOCAL_BASE_IMAGE)  # fmt: skip
    assert out.returncode != 0
    assert "The node would be created as g4dn.xlarge, which needs 4 vCPUs" in out.stdout
    assert "Nothing was created" in out.stdout and "--quota-code L-DB2E81BA --desired-value 4" in out.stdout
    assert not fresh_stack.moto.client("cloudformation").list_stacks()["StackSummaries"]
    # once the increase is granted, the same deploy passes the check (and goes on to the first stack, whose
    # template this test leaves out, so that it stops there)
    fresh_stack.moto.quotas.applied["L-DB2E81BA"] = 4
    checked = play(fresh_stack, "stack.yml", aws_stack_templates=str(tmp_path), aws_stack_instance_type="g4dn.xlarge",
                   aws_stack_base_image_parameter=LOCAL_BASE_IMAGE)  # fmt: skip
    assert "which needs 4 vCPUs" not in checked.stdout and "Quota: g4dn.xlarge" not in checked.stdout
    assert "TASK [aws_stack : Stack tl-fif-network]" in checked.stdout


def check_the_functions_copies(stack: Stack, bucket: str) -> None:
    """What the functions in the private subnets read from S3 instead of SSM and Cognito: the router user's password
    and certificate as SSM keeps them, and the pool's signing keys; encrypted, and readable by the functions."""
    s3, ssm = stack.moto.client("s3"), stack.ssm()
    secrets = s3.get_object(Bucket=bucket, Key="config/redis-router.json")
    assert secrets["ServerSideEncryption"] == "AES256"
    copied = json.loads(secrets["Body"].read())
    kept = {p["Name"].rsplit("/", 1)[1]: p["Value"] for p in ssm.get_parameters(
        Names=["/tl-fif/redis/router", "/tl-fif/redis/tls_cert"], WithDecryption=True)["Parameters"]}  # fmt: skip
    assert copied == {"password": kept["router"], "tls_cert": kept["tls_cert"]}
    assert copied["tls_cert"].startswith("-----BEGIN CERTIFICATE-----")
    jwks = json.loads(s3.get_object(Bucket=bucket, Key="config/jwks.json")["Body"].read())
    assert jwks["keys"] and all(k["kty"] == "RSA" and k["kid"] for k in jwks["keys"])
    # the bucket's expiry rules: replies after their days, parked jobs as a backstop, the copies never (read from
    # the template: moto's CloudFormation makes the bucket without its LifecycleConfiguration)
    node = load((TEMPLATES / "node.yml").read_text())["Resources"]
    rules = node["ReplyBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    prefixes = {r["Id"]: r.get("Prefix") for r in rules}
    assert prefixes == {"expire-replies": "replies/", "expire-parked": "inbox"}
    assert all(p and not f"{key}".startswith(p) for p in prefixes.values() for key in ("config/redis-router.json",))
    functions = load((TEMPLATES / "functions.yml").read_text())["Resources"]
    for role, wanted in (("RouterRole", {"redis-router.json", "jwks.json"}), ("QueueHealthRole", {"redis-router.json"}),
                         ("ShapeControlRole", {"jwks.json"})):  # fmt: skip
        statements = functions[role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        readable = {str(r["Fn::Sub"] if isinstance(r, dict) else r).rsplit("/config/", 1)[1]
                    for st in statements if st["Action"] == ["s3:GetObject"]
                    for r in (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])
                    if "/config/" in str(r)}  # fmt: skip
        assert readable == wanted, role


def test_the_node_stopping_reaches_the_router_which_may_be_invoked_by_that_rule() -> None:
    """moto's CloudFormation does not deploy the ops stack: the rule, its target and the permission are read here."""
    ops = templates()["ops"]["Resources"]
    rule = ops["NodeStoppedRule"]["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Instance State-change Notification"],
        "detail": {"state": ["stopped"], "instance-id": [{"Ref": "InstanceId"}]},
    }
    assert [t["Arn"] for t in rule["Targets"]] == [{"Ref": "RouterArn"}]
    rule_arn = {"Fn::GetAtt": ["NodeStoppedRule", "Arn"]}
    granted = [
        r["Properties"] for r in ops.values()
        if r["Type"] == "AWS::Lambda::Permission" and r["Properties"]["SourceArn"] == rule_arn
    ]  # fmt: skip
    assert granted == [{"Action": "lambda:InvokeFunction", "FunctionName": {"Ref": "RouterArn"},
                        "Principal": "events.amazonaws.com", "SourceArn": rule_arn}]  # fmt: skip
    schedule = ops["QueueHealthSchedule"]["Properties"]
    assert schedule["ScheduleExpression"] == "rate(5 minutes)"
    assert [t["Arn"] for t in schedule["Targets"]] == [{"Ref": "QueueHealthArn"}]
    assert any(
        r["Type"] == "AWS::Lambda::Permission" and r["Properties"]["FunctionName"] == {"Ref": "QueueHealthArn"}
        and r["Properties"]["SourceArn"] == {"Fn::GetAtt": ["QueueHealthSchedule", "Arn"]} for r in ops.values()
    )  # fmt: skip


def check_the_inventory(stack: Stack, instance_id: str, reply_bucket: str) -> None:
    """The node's settings reach the dynamic inventory: the instance is found by its tag, grouped by its type, and
    its agent settings resolve from the SSM parameters the role published."""
    ssm = stack.ssm()
    assert ssm.get_parameter(Name="/tl-fif/node/TL_REPLY_BUCKET")["Parameter"]["Value"] == reply_bucket
    shown = subprocess.run(
        [str(PLAYBOOK.with_name("ansible")), "-i", "inventory/aws_ec2.yml", instance_id, "-m",
         "ansible.builtin.debug", "-a", "var=node_agent_env", "-o"],
        cwd=ROOT, env=ansible_env(stack), check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    agent_env = json.loads(shown.stdout.split("=>", 1)[1])["node_agent_env"]
    assert agent_env["TL_REPLY_BUCKET"] == reply_bucket
    # node queue mode: the node's own Redis, over TLS on loopback, as the agent's ACL user with its SSM password
    password = ssm.get_parameter(Name="/tl-fif/redis/agent", WithDecryption=True)["Parameter"]["Value"]
    assert agent_env["TL_REDIS_URL"] == (
        f"rediss://agent:{password}@127.0.0.1:6379/0?ssl_ca_certs=/etc/redis-tls/server.crt"
    )
    assert len(password) == 32
