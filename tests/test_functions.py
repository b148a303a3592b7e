"""queue_health, shape_control, budget_killer, cost_publisher and cost_summary against the local stack."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from devstack.quotas import QuotaServer
from devstack.stack import Stack
from lambdas.budget_killer.handler import kill
from lambdas.common import costs
from lambdas.common.auth import JwksCache, KeysUnavailable, Verifier
from lambdas.common.costs import forecast_month
from lambdas.common.node import HOLD_TAG, REFUSED_TAG, RESIZING_TAG
from lambdas.common.settings import Settings
from lambdas.cost_publisher.handler import publish
from lambdas.cost_summary.handler import send
from lambdas.queue_health import handler as queue_health
from lambdas.shape_control.app import ShapeControl
from tests.support import AUDIENCE, ISSUER, JwksServer, SigningKey, body_of, emf_metrics, setenv, v2_event

pytestmark = pytest.mark.slow


@pytest.fixture
def env(lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    setenv(monkeypatch, lambda_env)
    return lambda_env


def tags(stack: Stack) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in stack.node().get("Tags", [])}


# ---------------------------------------------------------------- queue_health


def test_queue_health_reports_ok_with_latency(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    queue_health.reset()
    response = queue_health.handler(v2_event("GET", "/queue-health"), None)
    body = body_of(response)
    assert (response["statusCode"], body["redis"]) == (200, "ok")
    assert 0 <= body["latencyMs"] < 200
    assert [m["QueueHealthy"] for m in emf_metrics(capsys.readouterr().out) if "QueueHealthy" in m] == [1]
    assert queue_health.handler({}, None)["redis"] == "ok"  # scheduled call: a plain result
    queue_health.reset()


def test_queue_health_fails_when_ping_is_slow(env: dict[str, str], stack: Stack) -> None:
    queue_health.reset()
    queue_health.handler({}, None)  # connect first, so that only the PING is timed
    stack.redis.client().execute_command("CLIENT", "PAUSE", "400", "ALL")
    response = queue_health.handler(v2_event("GET", "/queue-health"), None)
    body = body_of(response)
    assert (response["statusCode"], body["redis"]) == (503, "slow")
    assert body["latencyMs"] > 200
    queue_health.reset()


def test_queue_health_fails_when_redis_is_down(
    env: dict[str, str], stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_health.reset()
    stack.redis.stop()  # the node runs (moto's instance): its Redis should answer
    response = queue_health.handler(v2_event("GET", "/queue-health"), None)
    assert (response["statusCode"], body_of(response)["redis"]) == (503, "fail")
    assert "error" in body_of(response)
    assert [m["QueueHealthy"] for m in emf_metrics(capsys.readouterr().out) if "QueueHealthy" in m] == [0]
    queue_health.reset()


# ---------------------------------------------------------------- shape_control


@pytest.fixture
def shape(env: dict[str, str], stack: Stack, jwks: JwksServer) -> Iterator[tuple[ShapeControl, list[Any]]]:
    dispatched: list[dict[str, Any]] = []
    settings = Settings.from_env()
    app = ShapeControl(settings, stack.ec2(), Verifier(JwksCache(jwks.url), ISSUER, AUDIENCE), dispatched.append)
    yield app, dispatched


def resize(app: ShapeControl, token: str | None, target: str) -> tuple[int, dict[str, Any]]:
    response = app.handle(v2_event("POST", "/resize", token=token, query={"target": target}))
    return response["statusCode"], body_of(response)


def test_only_admins_may_resize(shape: tuple[ShapeControl, Any], signing_key: SigningKey) -> None:
    app, dispatched = shape
    assert resize(app, None, "g4dn.xlarge")[0] == 401
    assert resize(app, signing_key.token(), "g4dn.xlarge")[0] == 403
    assert resize(app, signing_key.token(**{"cognito:groups": ["users"]}), "g4dn.xlarge")[0] == 403
    assert dispatched == []


@pytest.mark.parametrize("target", ["p4d.24xlarge", "", "t3.small;rm"])
def test_unknown_targets_are_refused(
    shape: tuple[ShapeControl, Any], signing_key: SigningKey, stack: Stack, target: str
) -> None:
    code, body = resize(shape[0], signing_key.token(**{"cognito:groups": ["admin"]}), target)
    assert (code, body["field"]) == (400, "target")
    assert "g4dn.xlarge, t3.small" in body["message"]
    assert stack.node()["InstanceType"] == "t3.small"


def test_resize_is_dispatched_then_stops_retypes_and_starts(
    shape: tuple[ShapeControl, Any], signing_key: SigningKey, stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    app, dispatched = shape
    code, body = resize(app, signing_key.token(**{"cognito:groups": ["admin"]}), "g4dn.xlarge")
    assert (code, body["status"], body["from"], body["to"]) == (202, "resizing", "t3.small", "g4dn.xlarge")
    assert tags(stack)[RESIZING_TAG] == "g4dn.xlarge"  # the router will not start it meanwhile
    assert resize(app, signing_key.token(**{"cognito:groups": ["admin"]}), "g4dn.xlarge")[0] == 409
    (job,) = dispatched
    done = app.handle(job)  # what the asynchronous invocation runs
    assert done["status"] == "resized"
    described = stack.node()
    assert (described["InstanceType"], described["State"]["Name"]) == ("g4dn.xlarge", "running")
    assert RESIZING_TAG not in tags(stack)
    assert [m["Resizes"] for m in emf_metrics(capsys.readouterr().out) if "Resizes" in m] == [1]
    code, body = resize(app, signing_key.token(**{"cognito:groups": ["admin"]}), "g4dn.xlarge")
    assert (code, body["status"]) == (200, "unchanged")


def test_inline_resize_answers_when_done(
    env: dict[str, str], stack: Stack, jwks: JwksServer, signing_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TL_RESIZE_MODE", "inline")
    app = ShapeControl(Settings.from_env(), stack.ec2(), Verifier(JwksCache(jwks.url), ISSUER, AUDIENCE), None)
    code, body = resize(app, signing_key.token(**{"cognito:groups": ["admin"]}), "g4dn.xlarge")
    assert (code, body["status"], body["type"]) == (200, "resized", "g4dn.xlarge")
    assert stack.node()["InstanceType"] == "g4dn.xlarge"


def test_the_signing_keys_can_come_from_the_copy_in_s3(
    env: dict[str, str], stack: Stack, signing_key: SigningKey
) -> None:
    """The functions in the private subnets read the JWKS the aws_stack role copied to S3 (no IPv6 to Cognito)."""
    s3 = stack.moto.client("s3")
    s3.put_object(Bucket=stack.bucket, Key="config/jwks.json", Body=json.dumps({"keys": [signing_key.jwk()]}))
    verifier = Verifier(JwksCache(f"s3://{stack.bucket}/config/jwks.json"), ISSUER, AUDIENCE)
    assert verifier.claims(f"Bearer {signing_key.token()}").sub
    missing = Verifier(JwksCache(f"s3://{stack.bucket}/config/nothing.json"), ISSUER, AUDIENCE)
    with pytest.raises(KeysUnavailable, match=r"config/nothing\.json"):
        missing.claims(f"Bearer {signing_key.token()}")


def test_a_held_node_is_not_resized(shape: tuple[ShapeControl, Any], signing_key: SigningKey, stack: Stack) -> None:
    stack.ec2().create_tags(Resources=[stack.instance_id], Tags=[{"Key": HOLD_TAG, "Value": "budget"}])
    assert resize(shape[0], signing_key.token(**{"cognito:groups": ["admin"]}), "g4dn.xlarge")[0] == 409


ADMIN = {"cognito:groups": ["admin"]}
G_QUOTA = "L-DB2E81BA"


@pytest.mark.parametrize("mode", ["async", "inline"])
def test_a_target_beyond_the_quota_is_refused_before_the_node_stops(
    shape: tuple[ShapeControl, Any], signing_key: SigningKey, stack: Stack, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto's Service Quotas has no EC2 quotas: the stand-in answers with a new account's 0 vCPUs for G (its
    default; no applied value, so the function must fall back to GetAWSDefaultServiceQuota)."""
    monkeypatch.setenv("TL_RESIZE_MODE", mode)
    stack.ec2().start_instances(InstanceIds=[stack.instance_id])
    with QuotaServer(defaults={G_QUOTA: 0}) as server:
        dispatched: list[Any] = []
        app = ShapeControl(Settings.from_env(), stack.ec2(), shape[0].verifier, dispatched.append, server.client())
        code, body = resize(app, signing_key.token(**ADMIN), "g4dn.xlarge")
        assert (code, body["status"], body["quota"]) == (409, "quota", G_QUOTA)
        assert (body["vcpus_needed"], body["vcpus_allowed"]) == (4, 0)
        assert "--quota-code L-DB2E81BA --desired-value 4" in body["message"]
        assert [op for op, _ in server.calls] == ["GetServiceQuota", "GetAWSDefaultServiceQuota"]
        assert dispatched == []
        described = stack.node()
        assert (described["InstanceType"], described["State"]["Name"]) == ("t3.small", "running")
        assert RESIZING_TAG not in tags(stack)

        server.applied[G_QUOTA] = 4  # the increase was granted
        accepted = 202 if mode == "async" else 200
        assert resize(app, signing_key.token(**ADMIN), "g4dn.xlarge")[0] == accepted
        if mode == "async":
            app.handle(dispatched[0])
        assert stack.node()["InstanceType"] == "g4dn.xlarge"
        # the Standard quota is one the stand-in does not know (both calls fail): the function cannot tell, so it
        # goes on and lets the start decide
        server.calls.clear()
        assert resize(app, signing_key.token(**ADMIN), "t3.small")[0] == accepted
        assert [op for op, _ in server.calls] == ["GetServiceQuota", "GetAWSDefaultServiceQuota"]


def test_a_start_refused_for_capacity_puts_the_old_type_back(
    shape: tuple[ShapeControl, Any], signing_key: SigningKey, stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """moto never runs out of capacity: the refusal EC2 sends (InsufficientInstanceCapacity on StartInstances) is
    raised into the real client's call to moto, once, the way botocore would raise it."""
    app, dispatched = shape
    refused: list[dict[str, Any]] = []

    def no_capacity(params: dict[str, Any], **_: Any) -> None:
        if not refused:
            refused.append(params)
            raise ClientError({"Error": {"Code": "InsufficientInstanceCapacity", "Message":
                               "We currently do not have sufficient g4dn.xlarge capacity in the zone."}},
                              "StartInstances")  # fmt: skip

    app.ec2.meta.events.register("provide-client-params.ec2.StartInstances", no_capacity)
    assert resize(app, signing_key.token(**ADMIN), "g4dn.xlarge")[0] == 202
    done = app.handle(dispatched[0])
    assert (done["status"], done["type"]) == ("refused", "t3.small")
    assert done["reason"].startswith("InsufficientInstanceCapacity: We currently do not have")
    described = stack.node()
    assert (described["InstanceType"], described["State"]["Name"]) == ("t3.small", "running")
    assert tags(stack)[REFUSED_TAG].startswith("g4dn.xlarge: InsufficientInstanceCapacity")
    assert RESIZING_TAG not in tags(stack)
    assert [m["ResizesRefused"] for m in emf_metrics(capsys.readouterr().out) if "ResizesRefused" in m] == [1]
    # the next resize that works clears the record
    assert resize(app, signing_key.token(**ADMIN), "g4dn.xlarge")[0] == 202
    assert app.handle(dispatched[1])["status"] == "resized"
    assert REFUSED_TAG not in tags(stack)


def test_inline_resize_refused_for_capacity_is_a_409_with_the_reason(
    env: dict[str, str], stack: Stack, jwks: JwksServer, signing_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TL_RESIZE_MODE", "inline")
    app = ShapeControl(Settings.from_env(), stack.ec2(), Verifier(JwksCache(jwks.url), ISSUER, AUDIENCE), None)
    calls: list[int] = []

    def quota_exceeded(**_: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ClientError({"Error": {"Code": "VcpuLimitExceeded", "Message": "You have requested more vCPU "
                               "capacity than your current vCPU limit of 0 allows"}}, "StartInstances")  # fmt: skip

    app.ec2.meta.events.register("provide-client-params.ec2.StartInstances", quota_exceeded)
    code, body = resize(app, signing_key.token(**ADMIN), "g4dn.xlarge")
    assert (code, body["status"]) == (409, "refused")
    assert "VcpuLimitExceeded" in body["message"] and "runs as t3.small again" in body["message"]
    assert stack.node()["InstanceType"] == "t3.small"


def test_other_start_errors_are_not_taken_for_refusals(
    shape: tuple[ShapeControl, Any], signing_key: SigningKey, stack: Stack
) -> None:
    app, dispatched = shape

    def broken(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "StartInstances")

    app.ec2.meta.events.register("provide-client-params.ec2.StartInstances", broken)
    assert resize(app, signing_key.token(**ADMIN), "g4dn.xlarge")[0] == 202
    with pytest.raises(ClientError, match="InternalError"):
        app.handle(dispatched[0])  # Lambda records the failed asynchronous invocation
    assert RESIZING_TAG not in tags(stack)


# ---------------------------------------------------------------- budget_killer


def test_budget_killer_stops_holds_releases_and_deletes_and_is_safe_twice(
    env: dict[str, str], stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ec2 = stack.ec2()
    eip = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=stack.instance_id)
    other = ec2.run_instances(ImageId=stack.node()["ImageId"], InstanceType="t3.micro", MinCount=1, MaxCount=1)
    other_id = other["Instances"][0]["InstanceId"]  # not tagged: not ours, never touched
    elasticache = stack.moto.client("elasticache")
    elasticache.create_replication_group(ReplicationGroupId="tl-queue", ReplicationGroupDescription="queue",
                                         Engine="redis", CacheNodeType="cache.t4g.small", NumCacheClusters=1,
                                         AtRestEncryptionEnabled=True)  # fmt: skip
    for name, value in {"TL_BUDGET_RELEASE_EIP": "on", "TL_BUDGET_DELETE_REDIS": "on",
                        "TL_REDIS_CLUSTER_ID": "tl-queue"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    s = Settings.from_env()
    first = kill(s, ec2, elasticache, dt.date(2026, 11, 23))
    assert first["stopped"] == [stack.instance_id]
    assert first["released_eips"] == [eip["PublicIp"]] and first["redis_deleted"]
    assert stack.node()["State"]["Name"] in ("stopping", "stopped")
    assert tags(stack)[HOLD_TAG] == "budget-2026-11-23"
    assert ec2.describe_addresses()["Addresses"] == []
    group = elasticache.describe_replication_groups(ReplicationGroupId="tl-queue")["ReplicationGroups"][0]
    assert group["Status"] == "deleting"
    other_state = ec2.describe_instances(InstanceIds=[other_id])["Reservations"][0]["Instances"][0]["State"]
    assert other_state["Name"] == "running"
    second = kill(s, ec2, elasticache, dt.date(2026, 11, 24))
    assert second["stopped"] == [] and second["released_eips"] == []
    assert tags(stack)[HOLD_TAG] == "budget-2026-11-23"  # the first hold stands
    stops = [m["BudgetStops"] for m in emf_metrics(capsys.readouterr().out) if "BudgetStops" in m]
    assert stops == [1, 0]


def test_budget_killer_by_default_leaves_the_eip_and_redis(env: dict[str, str], stack: Stack) -> None:
    ec2 = stack.ec2()
    eip = ec2.allocate_address(Domain="vpc")
    ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=stack.instance_id)
    summary = kill(Settings.from_env(), ec2, None, dt.date(2026, 11, 23))
    assert summary["stopped"] == [stack.instance_id] and summary["released_eips"] == []
    assert len(ec2.describe_addresses()["Addresses"]) == 1


def test_budget_killer_handler_takes_an_sns_event(env: dict[str, str], stack: Stack) -> None:
    from lambdas.budget_killer.handler import handler  # noqa: PLC0415

    event = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "AWS Budgets: actual cost over EUR 20"}}]}
    assert handler(event, None)["stopped"] == [stack.instance_id]


# ---------------------------------------------------------------- cost_publisher and cost_summary


NOW = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def billing(stack: Stack) -> Any:
    """CloudWatch in us-east-1, where AWS keeps the billing metrics; moto has none, so a test writes them."""

    env = stack.moto.aws_env()
    return boto3.client("cloudwatch", endpoint_url=stack.moto.url, region_name=costs.REGION,
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])  # fmt: skip


def charge(cw: Any, usd: float, at: dt.datetime, service: str | None = None) -> None:
    """One EstimatedCharges datapoint as AWS publishes it: the month-to-date estimate, total or per service."""
    dims = [{"Name": "Currency", "Value": "USD"}]
    if service:
        dims.insert(0, {"Name": "ServiceName", "Value": service})
    cw.put_metric_data(Namespace=costs.NAMESPACE, MetricData=[
        {"MetricName": costs.METRIC, "Dimensions": dims, "Timestamp": at, "Value": usd}])  # fmt: skip


def test_cost_publisher_publishes_the_newest_estimate_in_euros(
    env: dict[str, str], billing: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TL_USD_EUR_RATE", "0.9")
    charge(billing, 2.10, NOW - dt.timedelta(hours=13))
    charge(billing, 2.50, NOW - dt.timedelta(hours=1))  # the estimate only grows within a month: the newest counts
    result = publish(billing, Settings.from_env(), NOW)
    assert result == {"published": True, "eur": 2.25, "amount": 2.5, "unit": "USD"}
    (metric,) = [m for m in emf_metrics(capsys.readouterr().out) if "CurrentSpendEUR" in m]
    assert metric["CurrentSpendEUR"] == 2.25
    assert metric["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TLFIF/Cost"


def test_on_the_first_of_the_month_last_months_estimate_is_not_this_months(env: dict[str, str], billing: Any) -> None:
    first = dt.datetime(2026, 12, 1, 2, 0, tzinfo=dt.UTC)
    charge(billing, 19.40, first - dt.timedelta(hours=3))  # 30 November's estimate, before AWS starts again at 0
    assert publish(billing, Settings.from_env(), first)["eur"] == 0.0


def test_cost_publisher_says_how_to_turn_billing_metrics_on_and_publishes_nothing(
    env: dict[str, str], billing: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    result = publish(billing, Settings.from_env(), NOW)
    assert result["published"] is False
    assert "Receive CloudWatch billing alerts" in result["error"]
    assert not [m for m in emf_metrics(capsys.readouterr().out) if "CurrentSpendEUR" in m]


def test_cost_publisher_publishes_nothing_when_cloudwatch_does_not_answer(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from botocore.config import Config  # noqa: PLC0415

    dead = boto3.client("cloudwatch", endpoint_url="http://127.0.0.1:9", region_name=costs.REGION,
                        config=Config(retries={"total_max_attempts": 1}))  # fmt: skip
    result = publish(dead, Settings.from_env(), NOW)
    assert result["published"] is False and "error" in result
    assert not [m for m in emf_metrics(capsys.readouterr().out) if "CurrentSpendEUR" in m]


def test_the_forecast_is_a_straight_line_over_the_month() -> None:
    assert forecast_month(3.0, dt.date(2026, 11, 10)) == pytest.approx(9.0)
    assert forecast_month(3.1, dt.date(2026, 12, 31)) == pytest.approx(3.1)


def mailbox(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, str]:
    sns, sqs = stack.moto.client("sns"), stack.moto.client("sqs")
    topic = sns.create_topic(Name="tl-cost")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="mailbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    monkeypatch.setenv("TL_COST_TOPIC_ARN", topic)
    return sns, sqs, queue_url


def test_cost_summary_mails_a_readable_summary(
    env: dict[str, str], stack: Stack, billing: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sns, sqs, queue_url = mailbox(stack, monkeypatch)
    at = NOW - dt.timedelta(hours=2)
    charge(billing, 1.30, at)
    charge(billing, 0.10, at, "AmazonS3")
    charge(billing, 1.20, at, "AmazonEC2")
    charge(billing, 0.0, at, "AWSLambda")  # a service at zero is left out
    result = send(billing, sns, Settings.from_env(), NOW)
    assert result["subject"] == "tinyllama-shape: €1.12 so far in November 2026"
    message = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2)["Messages"][0]["Body"]
    assert "month to date   €    1.12" in message
    assert "month forecast  €    3.35" in message and "within the €20.00 budget" in message
    assert message.index("AmazonEC2") < message.index("AmazonS3") and "AWSLambda" not in message
    assert "Estimated in USD" in message


def test_cost_summary_without_billing_metrics_mails_what_to_turn_on(
    env: dict[str, str], stack: Stack, billing: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sns, sqs, queue_url = mailbox(stack, monkeypatch)
    result = send(billing, sns, Settings.from_env(), NOW)
    assert result["sent"] is True and "cannot be read" in result["subject"]
    message = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2)["Messages"][0]["Body"]
    assert "Receive CloudWatch billing alerts" in message


def test_cost_summary_without_a_topic_says_what_is_missing(env: dict[str, str], stack: Stack) -> None:
    from lambdas.common.settings import SettingsError  # noqa: PLC0415

    with pytest.raises(SettingsError, match="TL_COST_TOPIC_ARN is required"):
        send(stack.moto.client("cloudwatch"), stack.moto.client("sns"), Settings.from_env(), NOW)
