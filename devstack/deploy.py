"""The AWS side of the local stack, deployed the way it is on AWS, into the moto server.

``playbooks/stack.yml`` (the aws_stack role) deploys the stacks that come before the Lambdas — network, node,
queue, identity, the functions' roles — from the role's templates, with the few properties moto's CloudFormation
cannot take cut out (``devstack.cfn_moto`` lists each with its reason). Then the Lambda zips are built
(``lambdas.package``, as ``make lambda-package``) and shipped with ``playbooks/lambdas.yml`` (the lambda_deploy
role): functions, a version, the ``prod`` alias.

moto's CloudFormation creates no Cognito resources and no API Gateway v2, so the user pool comes from
``devstack.edge.create_user_pool`` and the HTTP API is the local edge, which runs the same router code.

The queue is in ``node`` mode, the default: the role makes the Redis users' passwords and TLS pair in SSM (the
certificate also names the local node's address on the bridge) and the functions' copy in S3; the functions reach
the node's Redis over TLS as the ``router`` user, as on AWS (``Deployment.function_env``).
"""

from __future__ import annotations

import ast
import contextlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from devstack.ansible import play
from devstack.cfn_moto import for_moto, for_strict_moto, load
from devstack.edge import UserPool, edge_env
from devstack.procs import REPO, StackError, role_default
from devstack.stack import BUCKET, Stack
from lambdas.package import FUNCTIONS, build, default_wheels, fetch_wheels

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import FilterTypeDef

TEMPLATES: Final = REPO / "roles" / "aws_stack" / "files" / "templates"
BEFORE_THE_LAMBDAS: Final = ("network", "node", "queue", "identity", "functions")
PREFIX: Final = "tl-fif"
ROLE_OUTPUTS: Final = {fn: "".join(part.title() for part in fn.split("_")) + "RoleArn" for fn in FUNCTIONS}
"""Each function's role, as the functions stack names its output (``router`` → ``RouterRoleArn``)."""


@dataclass(frozen=True)
class Deployment:
    outputs: dict[str, dict[str, str]]
    """Each stack's outputs, by stack name (network, node, …)."""
    functions: dict[str, str]
    """The ``prod`` alias ARN of each function."""
    function_env: dict[str, str]
    """The functions' TL_* settings (the local edge runs the router with them)."""

    @property
    def instance_id(self) -> str:
        return self.outputs["node"]["InstanceId"]

    @property
    def reply_bucket(self) -> str:
        return self.outputs["node"]["ReplyBucket"]


def moto_templates(target: Path, operator_arn: str = "") -> dict[str, list[str]]:
    """The role's templates as moto's CloudFormation can deploy them, written to ``target``; returns what was cut
    from each. With ``operator_arn`` (a strict local AWS), their roles also as moto's IAM can evaluate them."""
    target.mkdir(parents=True, exist_ok=True)
    removed = {}
    for path in sorted(TEMPLATES.glob("*.yml")):
        adapted, removed[path.stem] = for_moto(path.stem, load(path.read_text()))
        if operator_arn:
            adapted, _changes = for_strict_moto(adapted, operator_arn)
        (target / path.name).write_text(json.dumps(adapted))
    return removed


def stack_outputs(stack: Stack) -> dict[str, dict[str, str]]:
    cloudformation = stack.moto.client("cloudformation")
    outputs = {}
    for name in BEFORE_THE_LAMBDAS:
        described = cloudformation.describe_stacks(StackName=f"{PREFIX}-{name}")["Stacks"][0]
        outputs[name] = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    return outputs


# The public base image of a fresh account, as the local AWS has one: moto's public SSM parameters hold Amazon
# Linux's (not Canonical's, the role's default), and its EC2 knows the image they name.
LOCAL_BASE_IMAGE: Final = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-x86_64"


def node_queue_env(bucket: str, node_address: str) -> dict[str, str]:
    """The functions' queue settings in ``node`` mode, as playbooks/aws.yml sets them: the node's Redis over TLS,
    the router user's password and the certificate from the copy the aws_stack role keeps in S3."""
    port = role_default("queue_redis", "queue_redis_port")
    secrets_key = role_default("aws_stack", "aws_stack_redis_secrets_key")
    return {"TL_REDIS_URL": f"rediss://{node_address}:{port}/0", "TL_REDIS_SECRETS": f"s3://{bucket}/{secrets_key}",
            "TL_QUEUE_MODE": "node"}  # fmt: skip


def deploy_stacks(
    stack: Stack, pool: UserPool, workdir: Path, node_address: str, operator_arn: str = ""
) -> dict[str, dict[str, str]]:
    """The stacks before the Lambdas, by playbooks/stack.yml; the stack then uses the deployed bucket and node.
    ``operator_arn``: the local AWS enforces IAM, and the roles admit the operator (``MotoServer.enforce_iam``)."""
    templates = workdir / "templates"
    moto_templates(templates, operator_arn)
    out = play(stack, "stack.yml", log=workdir / "stack.log", timeout_s=600, aws_stack_templates=str(templates),
               aws_stack_jwks_url=pool.jwks_url, aws_stack_redis_certificate_names=[f"IP:{node_address}"],
               aws_stack_base_image_parameter=LOCAL_BASE_IMAGE)  # fmt: skip
    if out.returncode != 0:
        raise StackError(f"playbooks/stack.yml failed; see {workdir / 'stack.log'}:\n{out.stdout[-3000:]}")
    outputs = stack_outputs(stack)
    stack.bucket = outputs["node"]["ReplyBucket"]
    stack.instance_id = outputs["node"]["InstanceId"]
    if operator_arn:
        rewrite_inline_policies(stack)
    return outputs


def rewrite_inline_policies(stack: Stack) -> None:
    """moto's CloudFormation keeps a role's inline policies as the Python repr of the parsed document, which its own
    access control cannot read (a server error on every call of that role): they are put again, unchanged, as
    JSON through IAM's API."""
    iam = stack.moto.client("iam")
    for role in iam.list_roles()["Roles"]:
        for name in iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]:
            document = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=name)["PolicyDocument"]
            if isinstance(document, str):  # moto hands back the Python repr of the document it parsed
                document = ast.literal_eval(document)
            iam.put_role_policy(RoleName=role["RoleName"], PolicyName=name, PolicyDocument=json.dumps(document))


def deploy(stack: Stack, pool: UserPool, workdir: Path, node_address: str, operator_arn: str = "") -> Deployment:
    """Stacks, then Lambdas, into the stack's moto server; the functions reach the node's Redis at
    ``node_address``. ``operator_arn``: the local AWS enforces IAM (``deploy_stacks``)."""
    outputs = deploy_stacks(stack, pool, workdir, node_address, operator_arn)

    zips = workdir / "lambdas"
    wheels = fetch_wheels(default_wheels())
    for function in FUNCTIONS:
        build(function, zips, wheels)
    functions = outputs["functions"]
    network = outputs["network"]
    settings = {**edge_env(stack, pool), **node_queue_env(stack.bucket, node_address)}
    # AWS_* are reserved names in a Lambda's environment
    env = {k: v for k, v in settings.items() if not k.startswith("AWS_")}
    # moto's signature check rejects Lambda's REST calls made with a real key (SignatureDoesNotMatch on
    # GetFunction, whoever signs): the functions are shipped with access control paused, as the operator would
    with (stack.moto.iam_paused("moto cannot verify SigV4 on Lambda's REST paths") if operator_arn
          else contextlib.nullcontext()):  # fmt: skip
        out = play(stack, "lambdas.yml", log=workdir / "lambdas.log", timeout_s=600,
                   lambda_deploy_build_dir=str(zips),
                   lambda_deploy_role_arns={fn: functions[key] for fn, key in ROLE_OUTPUTS.items()},
                   lambda_deploy_subnet_ids=network["PrivateSubnetIds"].split(","),
                   lambda_deploy_security_group_ids=[network["LambdaSecurityGroupId"]],
                   lambda_deploy_env=env)  # fmt: skip
        if out.returncode != 0:
            raise StackError(f"playbooks/lambdas.yml failed; see {workdir / 'lambdas.log'}:\n{out.stdout[-3000:]}")
        lam = stack.moto.client("lambda")
        aliases = {fn: lam.get_alias(FunctionName=f"{PREFIX}-{fn}", Name="prod")["AliasArn"] for fn in FUNCTIONS}

    return Deployment(outputs, aliases, settings)


def teardown(stack: Stack, log: Path, *, delete_data: bool, strict: bool = False) -> subprocess.CompletedProcess[str]:
    """``playbooks/teardown.yml`` against the local AWS, as an operator runs it (``-e teardown_delete_data``);
    returns its run, a failure is a StackError. moto's CloudFormation leaves two kinds of resource behind that
    AWS's deletes (``clear_what_motos_cloudformation_leaves``): they are removed first. ``strict``: the local AWS
    enforces IAM, and the functions are deleted with its access control paused, as they were shipped (moto's
    SigV4 check fails Lambda's REST calls)."""
    clear_what_motos_cloudformation_leaves(stack)
    with (stack.moto.iam_paused("moto cannot verify SigV4 on Lambda's REST paths") if strict
          else contextlib.nullcontext()):  # fmt: skip
        out = play(stack, "teardown.yml", log=log, timeout_s=600, teardown_delete_data=delete_data)
    if out.returncode != 0:
        raise StackError(f"playbooks/teardown.yml failed; see {log}:\n{out.stdout[-3000:]}")
    return out


def clear_what_motos_cloudformation_leaves(stack: Stack) -> None:
    """moto's CloudFormation has no delete for AWS::EC2::RouteTable and VPC endpoints (it drops them from the
    stack and leaves them in EC2), so the VPC's deletion would then fail on them; on AWS the stack deletes them
    first, as they depend on the VPC. They are removed here, as AWS would in its course."""
    ec2 = stack.ec2()
    described = stack.moto.client("cloudformation").describe_stacks()["Stacks"]
    network = [s for s in described if s["StackName"] == f"{PREFIX}-network"]
    if not network:
        return
    vpc_id = next(o["OutputValue"] for o in network[0].get("Outputs", []) if o["OutputKey"] == "VpcId")
    in_vpc: list[FilterTypeDef] = [{"Name": "vpc-id", "Values": [vpc_id]}]
    endpoints = [e["VpcEndpointId"] for e in ec2.describe_vpc_endpoints(Filters=in_vpc)["VpcEndpoints"]]
    if endpoints:
        ec2.delete_vpc_endpoints(VpcEndpointIds=endpoints)
    for table in ec2.describe_route_tables(Filters=in_vpc)["RouteTables"]:
        if any(a.get("Main") for a in table["Associations"]):
            continue
        for association in table["Associations"]:
            ec2.disassociate_route_table(AssociationId=association["RouteTableAssociationId"])
        ec2.delete_route_table(RouteTableId=table["RouteTableId"])


def leftovers(stack: Stack, *, strict: bool = False) -> dict[str, Any]:
    """What of the project is in the local AWS: stacks, functions, SSM parameters (AWS's public ones aside),
    buckets (the shared test stack's own aside, ``devstack.stack.BUCKET``), images, log groups, and instances
    not terminated. ``strict``: the local AWS enforces IAM, and the functions are listed with its access control
    paused (moto's SigV4 check fails Lambda's REST calls), as ``teardown`` deletes them."""
    cf = stack.moto.client("cloudformation")
    stacks = [s["StackName"] for s in cf.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]
    with (stack.moto.iam_paused("moto cannot verify SigV4 on Lambda's REST paths") if strict
          else contextlib.nullcontext()):  # fmt: skip
        functions = [f["FunctionName"] for f in stack.moto.client("lambda").list_functions()["Functions"]]
    pages = stack.ssm().get_paginator("describe_parameters").paginate()
    parameters = [p["Name"] for page in pages for p in page["Parameters"] if not p["Name"].startswith("/aws/")]
    buckets = [b["Name"] for b in stack.s3().list_buckets()["Buckets"] if b["Name"] != BUCKET]
    ec2 = stack.ec2()
    images = [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]
    groups = [g["logGroupName"] for g in stack.moto.client("logs").describe_log_groups()["logGroups"]]
    instances = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                 if i["State"]["Name"] not in ("terminated", "shutting-down")]  # fmt: skip
    return {"stacks": stacks, "functions": functions, "parameters": sorted(parameters), "buckets": sorted(buckets),
            "images": images, "log_groups": sorted(groups), "instances": instances}  # fmt: skip


NOTHING_LEFT: Final[dict[str, list[str]]] = {
    "stacks": [], "functions": [], "parameters": [], "buckets": [], "images": [], "log_groups": [], "instances": []
}  # fmt: skip
