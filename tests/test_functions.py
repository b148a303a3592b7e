"""queue_health, shape_control, budget_killer, cost_publisher and cost_summary against the local stack."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.stack import Stack
from lambdas.budget_killer.handler import kill
from lambdas.common.auth import JwksCache, Verifier
from lambdas.common.costs import forecast_month, month_period
from lambdas.common.node import HOLD_TAG, RESIZING_TAG
from lambdas.common.settings import Settings
from lambdas.cost_publisher.handler import publish
from lambdas.cost_summary.handler import send
from lambdas.queue_health import handler as queue_health
from lambdas.shape_control.app import ShapeControl
from tests.support import AUDIENCE, ISSUER, JwksServer, SigningKey, body_of, emf_metrics, v2_event

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(fresh_stack: Stack) -> Stack:
    return fresh_stack


@pytest.fixture
def env(function_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in function_env.items():
        monkeypatch.setenv(name, value)
    return function_env


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


def test_a_held_node_is_not_resized(shape: tuple[ShapeControl, Any], signing_key: SigningKey, stack: Stack) -> None:
    stack.ec2().create_tags(Resources=[stack.instance_id], Tags=[{"Key": HOLD_TAG, "Value": "budget"}])
    assert resize(shape[0], signing_key.token(**{"cognito:groups": ["admin"]}), "g4dn.xlarge")[0] == 409


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


def canned_costs(stack: Stack, *results: dict[str, Any]) -> None:
    """moto's Cost Explorer answers what is posted here, one result per call (it has no billing data)."""
    response = httpx.post(
        f"{stack.moto.url}/moto-api/static/ce/cost-and-usage-results",
        json={"results": list(results)},
        timeout=5,
    )
    response.raise_for_status()


def cost(amount: str, unit: str) -> dict[str, str]:
    return {"Amount": amount, "Unit": unit}


def total(amount: str, unit: str) -> dict[str, Any]:
    period = {"Start": "2026-11-01", "End": "2026-11-24"}
    return {"ResultsByTime": [{"TimePeriod": period, "Total": {"UnblendedCost": cost(amount, unit)}, "Groups": []}]}


def test_cost_publisher_converts_usd_to_eur(
    env: dict[str, str], stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TL_USD_EUR_RATE", "0.9")
    canned_costs(stack, total("2.50", "USD"))
    result = publish(stack.moto.client("ce"), Settings.from_env(), dt.date(2026, 11, 23))
    assert result == {"published": True, "eur": 2.25, "amount": 2.5, "unit": "USD"}
    (metric,) = [m for m in emf_metrics(capsys.readouterr().out) if "CurrentSpendEUR" in m]
    assert metric["CurrentSpendEUR"] == 2.25
    assert metric["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "TLFIF/Cost"


def test_cost_publisher_takes_euros_as_they_are(env: dict[str, str], stack: Stack) -> None:
    canned_costs(stack, total("1.9", "EUR"))
    assert publish(stack.moto.client("ce"), Settings.from_env(), dt.date(2026, 11, 23))["eur"] == 1.9


def test_cost_publisher_publishes_nothing_when_cost_explorer_fails(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    dead = boto3.client("ce", endpoint_url="http://127.0.0.1:9", config=Config(retries={"total_max_attempts": 1}))
    result = publish(dead, Settings.from_env(), dt.date(2026, 11, 23))
    assert result["published"] is False and "error" in result
    assert not [m for m in emf_metrics(capsys.readouterr().out) if "CurrentSpendEUR" in m]


def test_the_month_runs_from_the_first_to_tomorrow() -> None:
    assert month_period(dt.date(2026, 11, 1)) == {"Start": "2026-11-01", "End": "2026-11-02"}
    assert month_period(dt.date(2026, 12, 31)) == {"Start": "2026-12-01", "End": "2027-01-01"}
    assert forecast_month(3.0, dt.date(2026, 11, 10)) == pytest.approx(9.0)


def test_cost_summary_mails_a_readable_summary(
    env: dict[str, str], stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    sns, sqs = stack.moto.client("sns"), stack.moto.client("sqs")
    topic = sns.create_topic(Name="tl-cost")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="mailbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    monkeypatch.setenv("TL_COST_TOPIC_ARN", topic)
    groups = [
        {"Keys": ["Amazon Elastic Compute Cloud - Compute"], "Metrics": {"UnblendedCost": cost("1.20", "USD")}},
        {"Keys": ["Amazon Simple Storage Service"], "Metrics": {"UnblendedCost": cost("0.10", "USD")}},
    ]
    canned_costs(stack, {"ResultsByTime": [{"TimePeriod": {"Start": "2026-11-01", "End": "2026-11-11"},
                                            "Total": {}, "Groups": groups}]})  # fmt: skip
    result = send(stack.moto.client("ce"), sns, Settings.from_env(), dt.date(2026, 11, 10))
    assert result["subject"] == "tinyllama-shape: €1.12 so far in November 2026"
    message = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2)["Messages"][0]["Body"]
    assert "month to date   €    1.12" in message
    assert "month forecast  €    3.35" in message and "within the €20.00 budget" in message
    assert message.index("Elastic Compute Cloud") < message.index("Simple Storage Service")
    assert "Billed in USD" in message


def test_cost_summary_without_a_topic_says_what_is_missing(env: dict[str, str], stack: Stack) -> None:
    from lambdas.common.settings import SettingsError  # noqa: PLC0415

    with pytest.raises(SettingsError, match="TL_COST_TOPIC_ARN is required"):
        send(stack.moto.client("ce"), stack.moto.client("sns"), Settings.from_env(), dt.date(2026, 11, 10))
