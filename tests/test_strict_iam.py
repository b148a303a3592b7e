"""The code under the permissions of its own role: a local AWS that enforces IAM.

The stacks before the Lambdas are deployed by playbooks/stack.yml into a moto server whose IAM access control is
on (``MotoServer.enforce_iam``: the operator deploys with an administrator's key). Then the router runs with the
credentials of the router's role and the agent with those of the node's role, each assumed from the deployed
stack, so a policy that does not allow what the code calls fails here as it would on AWS.

moto checks actions everywhere but resources only for S3, SQS, IAM and STS, and no conditions: the roles'
statements of other services are widened to "*" for it (``devstack.cfn_moto.for_strict_moto``); their resources
and tag conditions are checked by reading the templates (tests/test_stack.py). The S3 statements, where a wrong
bucket or prefix is the mistake to catch, are checked as written.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from devstack.ansible import PLAYBOOK
from devstack.cfn_moto import RESOURCE_CHECKED, for_strict_moto, load
from devstack.deploy import TEMPLATES, deploy_stacks
from devstack.edge import create_user_pool
from devstack.procs import BlackHole, clean_env, venv_tool, wait_until
from devstack.quotas import QuotaServer
from devstack.stack import Stack, StandInServer
from jobqueue.inbox import Inbox
from lambdas.common import costs
from lambdas.common.auth import JwksCache, Verifier
from lambdas.common.settings import Settings
from lambdas.cost_publisher.handler import publish as publish_spend
from lambdas.router.app import Router
from lambdas.shape_control.app import ShapeControl
from tests.support import AUDIENCE, ISSUER, JwksServer, SigningKey, body_of, setenv, v2_event

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible is installed by `make deps`"),
    pytest.mark.timeout(600),
]


@dataclass
class Strict:
    stack: Stack
    outputs: dict[str, dict[str, str]]

    def role(self, stack_name: str, output: str) -> dict[str, str]:
        return self.stack.moto.role_credentials(self.outputs[stack_name][output])


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Strict]:
    workdir = tmp_path_factory.mktemp("strict")
    with Stack(workdir / "stack", prepare=False) as stack:
        operator = stack.moto.enforce_iam()
        pool = create_user_pool(stack)
        outputs = deploy_stacks(stack, pool, workdir / "deploy", "127.0.0.1", operator)
        yield Strict(stack, outputs)


@pytest.fixture
def no_agents_left(strict: Strict) -> Iterator[None]:
    """Each test's agents stopped after it, the queue emptied (their heartbeats with it)."""
    yield
    strict.stack.stop_agents()
    strict.stack.redis.client().flushall()


def router_as(strict: Strict, monkeypatch: pytest.MonkeyPatch, jwks: JwksServer, redis_url: str) -> Router:
    """The router as Lambda runs it: its settings, and the credentials of its own role only."""
    env = {**strict.stack.moto.aws_env(), **strict.role("functions", "RouterRoleArn"), "TL_REDIS_URL": redis_url,
           "TL_JWKS_URL": jwks.url, "TL_JWT_ISSUER": ISSUER, "TL_JWT_AUDIENCE": AUDIENCE,
           "TL_REPLY_BUCKET": strict.stack.bucket, "TL_QUEUE_MODE": "node"}  # fmt: skip
    setenv(monkeypatch, env)
    # a fresh container: boto3's default session resolves credentials once and keeps them, so one made by an
    # earlier test in this process would still sign with that test's key
    boto3.setup_default_session()
    return Router.from_env()


def infer(router: Router, token: str, prompt: str) -> dict[str, Any]:
    response = router.handle(v2_event("POST", "/infer", body=json.dumps({"prompt": prompt, "max_tokens": 4}),
                                      token=token))  # fmt: skip
    assert response["statusCode"] == 202, response
    return body_of(response)


def result(router: Router, token: str, job_id: str) -> dict[str, Any]:
    response = router.handle(v2_event("GET", f"/result/{job_id}", token=token))
    assert response["statusCode"] == 200, response
    return body_of(response)


def test_the_local_aws_refuses_what_a_role_does_not_allow(strict: Strict) -> None:
    router = strict.role("functions", "RouterRoleArn")
    s3 = strict.stack.moto.client("s3", router)
    with pytest.raises(ClientError, match="AccessDenied"):  # replies are the agent's to write
        s3.put_object(Bucket=strict.stack.bucket, Key="replies/forged.json", Body=b"{}")
    with pytest.raises(ClientError, match=r"AccessDenied|not authorized"):  # the agent's Redis password
        strict.stack.moto.client("ssm", router).get_parameter(Name="/tl-fif/redis/agent", WithDecryption=True)
    with pytest.raises(ClientError, match=r"InvalidClientTokenId|InvalidAccessKeyId|SignatureDoesNotMatch"):
        strict.stack.moto.client("s3", {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
                                 ).list_buckets()  # fmt: skip


@pytest.mark.usefixtures("no_agents_left")
def test_a_job_goes_through_with_each_part_on_its_own_role(
    strict: Strict, standin: StandInServer, jwks: JwksServer, signing_key: SigningKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Queued by the router, run by the agent, the reply read back by the router: GET /result of a finished job
    reads ``replies/<id>.json`` with the router's role."""
    stack = strict.stack
    router = router_as(strict, monkeypatch, jwks, stack.redis.url)
    agent = stack.start_agent(standin.url, **strict.role("node", "NodeRoleArn"))
    token = signing_key.token(sub="strict-user")
    job_id = infer(router, token, "hello")["id"]
    reply = stack.wait_reply(job_id, 30)
    assert reply["status"] == "done", (reply, agent.tail())
    answered = result(router, token, job_id)
    assert answered["status"] == "done" and answered["reply"]["output"] == reply["output"], answered
    assert answered["url"].startswith(stack.moto.url)


@pytest.mark.usefixtures("no_agents_left")
def test_a_parked_job_is_adopted_and_answered_with_each_part_on_its_own_role(
    strict: Strict, standin: StandInServer, jwks: JwksServer, signing_key: SigningKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    stack = strict.stack
    token = signing_key.token(sub="strict-sleeper")
    with BlackHole() as hole:
        asleep = router_as(strict, monkeypatch, jwks, hole.redis_url)
        parked = infer(asleep, token, "while asleep")
    assert parked["status"] == "starting"
    inbox = Inbox(stack.s3(), stack.bucket)
    assert parked["id"] in set(inbox.job_ids())
    awake = router_as(strict, monkeypatch, jwks, stack.redis.url)
    assert result(awake, token, parked["id"])["status"] == "starting"
    stack.start_agent(standin.url, **strict.role("node", "NodeRoleArn"))
    reply = stack.wait_reply(parked["id"], 30)
    assert reply["status"] == "done", reply
    wait_until(lambda: parked["id"] not in set(inbox.job_ids()), 10, "the adopted job to leave the inbox")
    assert result(awake, token, parked["id"])["status"] == "done"


@pytest.mark.usefixtures("no_agents_left")
def test_the_agent_and_the_watchdog_stop_the_node_on_the_nodes_role(
    strict: Strict, standin: StandInServer, tmp_path: Path
) -> None:
    stack, ec2 = strict.stack, strict.stack.ec2()
    node_role = strict.role("node", "NodeRoleArn")
    # idle for 3 s: the agent stops its own instance (ec2:StopInstances, and its metrics on the way)
    agent = stack.start_agent(standin.url, TL_IDLE_MINUTES="0.05", TL_STOP_MODE="stop", TL_IDLE_POLL_S="0.2",
                              **node_role)  # fmt: skip
    wait_until(lambda: stack.node_state() in ("stopping", "stopped"), 30, "the agent's idle stop")
    assert "AccessDenied" not in agent.tail(200)
    agent.stop()
    stack.redis.client().flushall()  # its last heartbeat with it
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[stack.instance_id], WaiterConfig={"Delay": 0.2})
    ec2.start_instances(InstanceIds=[stack.instance_id])
    # no heartbeat (no agent): the watchdog starts its clock, then stops the instance after the limit
    state = tmp_path / "watchdog.json"
    env = {**clean_env(), **stack.moto.aws_env(),
           **node_role, "TL_REDIS_URL": stack.redis.url, "TL_INSTANCE_ID": stack.instance_id,
           "TL_WATCHDOG_STATE": str(state)}  # fmt: skip
    for limit in ("60", "1"):
        if limit == "1":
            time.sleep(1.1)
        run = subprocess.run([venv_tool("tl-watchdog")], env={**env, "TL_WATCHDOG_STALE_S": limit},
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
    assert "StopInstances called" in run.stdout, run.stdout + run.stderr
    assert stack.node_state() in ("stopping", "stopped")


def test_shape_control_resizes_on_its_own_role(
    strict: Strict, jwks: JwksServer, signing_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every EC2 call of a resize (the target's vCPUs, the tags, stop, retype, start) with the function's role.
    moto's Service Quotas has no EC2 quotas, so the stand-in answers those, and the role's servicequotas
    statement is checked in the template below."""
    role = strict.role("functions", "ShapeControlRoleArn")
    ec2 = strict.stack.moto.client("ec2", role)
    monkeypatch.setenv("TL_RESIZE_MODE", "async")
    with QuotaServer(defaults={"L-DB2E81BA": 4}) as server:
        quotas = server.client()
        dispatched: list[dict[str, Any]] = []
        settings = Settings.from_env()
        app = ShapeControl(settings, ec2, Verifier(JwksCache(jwks.url), ISSUER, AUDIENCE), dispatched.append, quotas)
        response = app.handle(v2_event("POST", "/resize", token=signing_key.token(**{"cognito:groups": ["admin"]}),
                                       query={"target": "g4dn.xlarge"}))  # fmt: skip
        assert response["statusCode"] == 202, response
        assert app.handle(dispatched[0])["status"] == "resized"
    # the target's vCPUs were read (ec2:DescribeInstanceTypes), so its quota was asked for
    assert [op for op, _ in server.calls] == ["GetServiceQuota", "GetAWSDefaultServiceQuota"]
    assert strict.stack.node()["InstanceType"] == "g4dn.xlarge"
    operator = strict.stack.ec2()  # the next test finds the builder again
    operator.stop_instances(InstanceIds=[strict.stack.instance_id])
    operator.modify_instance_attribute(InstanceId=strict.stack.instance_id, InstanceType={"Value": "t3.small"})
    shape_role = load((TEMPLATES / "functions.yml").read_text())["Resources"]["ShapeControlRole"]
    allowed = {a for p in shape_role["Properties"]["Policies"] for st in p["PolicyDocument"]["Statement"]
               for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])}  # fmt: skip
    assert {"servicequotas:GetServiceQuota", "servicequotas:GetAWSDefaultServiceQuota"} <= allowed


@pytest.mark.usefixtures("no_agents_left")
def test_the_spend_goes_from_cost_publisher_to_get_status_each_on_its_own_role(
    strict: Strict, jwks: JwksServer, signing_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cost_publisher copies the month's spend to S3 (the router's private subnets do not reach CloudWatch) and
    GET /status reads it back; each on its own role. The router may not write the copy."""
    stack = strict.stack
    publisher = strict.role("functions", "CostPublisherRoleArn")
    cw = stack.moto.client("cloudwatch", publisher)  # one region here; on AWS the billing metrics' us-east-1
    now = dt.datetime.now(dt.UTC)
    stack.cloudwatch().put_metric_data(Namespace=costs.NAMESPACE, MetricData=[{
        "MetricName": costs.METRIC, "Dimensions": [{"Name": "Currency", "Value": "USD"}],
        "Timestamp": now - dt.timedelta(minutes=30), "Value": 1.5}])  # fmt: skip
    monkeypatch.setenv("TL_REPLY_BUCKET", stack.bucket)
    published = publish_spend(cw, Settings.from_env(), now, stack.moto.client("s3", publisher))
    assert published["copy"] == f"s3://{stack.bucket}/{costs.SPEND_KEY}", published
    router = router_as(strict, monkeypatch, jwks, stack.redis.url)
    answer = router.handle(v2_event("GET", "/status", token=signing_key.token()))
    assert answer["statusCode"] == 200 and body_of(answer)["spend_eur"] == published["eur"], answer
    with pytest.raises(ClientError, match="AccessDenied"):
        stack.moto.client("s3", strict.role("functions", "RouterRoleArn")).put_object(
            Bucket=stack.bucket, Key=costs.SPEND_KEY, Body=b"{}")  # fmt: skip


def test_the_strict_adaptation_widens_only_what_moto_cannot_check() -> None:
    """S3 statements keep their resources (moto checks them); others are widened, conditions and all."""
    functions = load((TEMPLATES / "functions.yml").read_text())
    adapted, changes = for_strict_moto(functions, "arn:aws:iam::123456789012:user/tl-operator")
    assert any(c.startswith("RouterRole: trusts the operator") for c in changes)
    router = adapted["Resources"]["RouterRole"]["Properties"]
    for policy in router["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if all(a.split(":", 1)[0] in RESOURCE_CHECKED for a in actions):
                assert statement["Resource"] != "*" or statement.get("Sid") == "DescribeNode", statement
            else:
                assert statement["Resource"] == "*" and "Condition" not in statement, statement
    trust = router["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
    assert trust == {"Service": "lambda.amazonaws.com", "AWS": "arn:aws:iam::123456789012:user/tl-operator"}


# ---------------------------------------------------------------- read from the templates

S3_ARN = "arn:${AWS::Partition}:s3:::"


def _sub_text(value: Any) -> str | None:
    """The text of a !Sub (or a plain string), None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else str(sub[0])
    return None


def bucket_names() -> set[str]:
    names = set()
    for path in TEMPLATES.glob("*.yml"):
        for resource in load(path.read_text())["Resources"].values():
            if resource["Type"] == "AWS::S3::Bucket":
                name = _sub_text(resource["Properties"].get("BucketName"))
                assert name is not None, resource
                names.add(name)
    return names


def s3_resources() -> list[tuple[str, str]]:
    """(role/statement, S3 resource) of every policy statement in the templates."""
    found = []
    for path in TEMPLATES.glob("*.yml"):
        for name, resource in load(path.read_text())["Resources"].items():
            props = resource.get("Properties", {})
            documents = [p["PolicyDocument"] for p in props.get("Policies", []) if isinstance(p, dict)]
            documents += [props["PolicyDocument"]] if isinstance(props.get("PolicyDocument"), dict) else []
            for document in documents:
                for statement in document["Statement"]:
                    listed = statement.get("Resource", [])
                    for value in listed if isinstance(listed, list) else [listed]:
                        text = _sub_text(value)
                        if text and text.startswith(S3_ARN):
                            found.append((f"{path.stem}/{name}/{statement.get('Sid', '?')}", text))
    return found


def unmatched_bucket(resource: str, buckets: set[str]) -> bool:
    """Whether an S3 resource names no bucket the templates make (a wildcard may cover several)."""
    bucket = resource.removeprefix(S3_ARN).split("/", 1)[0]
    return not any(fnmatch.fnmatchcase(made, bucket) for made in buckets)


def test_every_s3_statement_names_a_bucket_the_templates_make() -> None:
    """What moto checks in the strict run, checked for every role, including those no test runs as."""
    buckets = bucket_names()
    resources = s3_resources()
    assert len(resources) > 10  # the walk found the statements
    assert [(where, r) for where, r in resources if unmatched_bucket(r, buckets)] == []


def test_the_bucket_walk_catches_the_old_replies_statement() -> None:
    buckets = bucket_names()
    assert unmatched_bucket(f"{S3_ARN}${{DataBucketPrefix}}-replies/*", buckets)
    assert not unmatched_bucket(f"{S3_ARN}${{DataBucketPrefix}}-replies-${{AWS::AccountId}}/replies/*", buckets)
    assert not unmatched_bucket(f"{S3_ARN}${{DataBucketPrefix}}-*/*", buckets)


# ---------------------------------------------------------------- the builder ships the functions (EC2-504)

COLLECTION = Path(__file__).resolve().parent.parent / ".ansible" / "collections" / "ansible_collections" / "amazon"
LAMBDA_DEPLOY_CODE = [
    Path(__file__).resolve().parent.parent / "roles" / "lambda_deploy" / "library" / "lambda_version.py",
    Path(__file__).resolve().parent.parent / "roles" / "lambda_deploy" / "library" / "lambda_vpc_ipv6.py",
    COLLECTION / "aws" / "plugins" / "modules" / "lambda.py",
    COLLECTION / "aws" / "plugins" / "modules" / "lambda_alias.py",
]
# Calls those modules make only to create or remove, which a builder's deploy of existing functions never does
# (and must not be allowed to): the first deploy, by the operator, creates the functions.
NOT_THE_BUILDERS = {"CreateFunction", "DeleteAlias"}
NOT_USED = {"ListLayerVersions"}  # amazon.aws.lambda with `layers`, which lambda_deploy does not give


def lambda_calls() -> set[str]:
    """The Lambda API actions the lambda_deploy role's modules call, read from their code."""
    calls = set()
    for path in LAMBDA_DEPLOY_CODE:
        text = path.read_text()
        names = re.findall(r"(?:client|connection)\.([a-z_]+)\(", text) + re.findall(r'_all\(client, "([a-z_]+)"', text)
        calls |= {
            "".join(part.title() for part in n.split("_")) for n in names if n not in ("get_waiter", "get_paginator")
        }
    return calls - NOT_THE_BUILDERS - NOT_USED


def node_statement(sid: str) -> dict[str, Any]:
    role = load((TEMPLATES / "node.yml").read_text())["Resources"]["NodeRole"]["Properties"]
    (statement,) = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"] if s.get("Sid") == sid]
    return dict(statement)


@pytest.mark.skipif(not COLLECTION.exists(), reason="the collections are installed by `make deps`")
def test_the_builder_may_run_exactly_the_lambda_deploy_roles_calls_on_the_projects_functions() -> None:
    ships = node_statement("BuilderShipsTheProjectsFunctions")
    granted = {a.removeprefix("lambda:") for a in ships["Action"]}
    assert len(lambda_calls()) >= 10  # the walk found the modules' calls
    assert lambda_calls() <= granted, lambda_calls() - granted
    assert granted - lambda_calls() <= {"GetFunctionConfiguration"}  # the modules' waiters poll it
    assert not NOT_THE_BUILDERS & granted and "*" not in "".join(ships["Action"])
    resources = [_sub_text(r) for r in ships["Resource"]]
    assert resources == ["arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:tl-fif-*"]
    passes = node_statement("BuilderPassesOnlyTheFunctionsRoles")
    assert passes["Action"] == "iam:PassRole"
    assert _sub_text(passes["Resource"]) == "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/tl-fif-functions-*"
    assert passes["Condition"] == {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}
