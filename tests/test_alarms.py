"""Alarms and budget notices that reach someone, read from the templates (moto's CloudFormation makes neither
alarms' deliveries nor budgets, so this walk is the check).

An alarm needs an action AWS can deliver: an SNS topic of the same stack that CloudWatch may publish to — not one
under the AWS managed key ``alias/aws/sns``, which CloudWatch cannot use
(https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services) — with a
subscriber. A budget notice needs a subscriber; an SNS one, a topic whose policy admits AWS Budgets and a
subscriber of its own (the budget killer, with its invoke permission).
"""

from __future__ import annotations

from typing import Any

import pytest

from devstack.cfn_moto import load
from devstack.deploy import TEMPLATES

AWS_MANAGED_SNS_KEY = "alias/aws/sns"


def templates() -> dict[str, dict[str, Any]]:
    return {path.stem: load(path.read_text()) for path in sorted(TEMPLATES.glob("*.yml"))}


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def refs(value: Any) -> list[str]:
    """The resources a value refers to with Ref (in lists and !If branches too)."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return [value["Ref"]]
        return [r for v in value.values() for r in refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in refs(v)]
    return []


def topic_problems(template: dict[str, Any], topic: str, publisher: str) -> list[str]:
    """Why ``publisher`` (a service principal) could not deliver through ``topic`` to anyone."""
    problems = []
    props = template["Resources"][topic].get("Properties", {})
    key = props.get("KmsMasterKeyId")
    if key == AWS_MANAGED_SNS_KEY:
        problems.append(f"{topic} is under {AWS_MANAGED_SNS_KEY}, which {publisher} cannot use")
    elif key is not None:
        key_policy = template["Resources"].get(refs(key)[0] if refs(key) else "", {}).get("Properties", {})
        if publisher not in str(key_policy.get("KeyPolicy", "")):
            problems.append(f"{topic}'s key does not admit {publisher}")
    subscribed = [s for s in of_type(template, "AWS::SNS::Subscription").values()
                  if topic in refs(s["Properties"]["TopicArn"])]  # fmt: skip
    if not subscribed:
        problems.append(f"{topic} has no subscriber")
    policies = [
        p for p in of_type(template, "AWS::SNS::TopicPolicy").values() if topic in refs(p["Properties"]["Topics"])
    ]
    if policies and not any(publisher in str(p["Properties"]["PolicyDocument"]) for p in policies):
        problems.append(f"{topic}'s policy does not admit {publisher}")
    return problems


def alarm_problems(template: dict[str, Any], name: str) -> list[str]:
    actions = template["Resources"][name]["Properties"].get("AlarmActions")
    if not isinstance(actions, list):  # missing, or an !If that may leave none
        return [f"{name} has no unconditional alarm action"]
    topics = [r for r in refs(actions) if template["Resources"].get(r, {}).get("Type") == "AWS::SNS::Topic"]
    if not topics:
        return [f"{name}'s actions name no topic of its stack"]
    return [p for topic in topics for p in topic_problems(template, topic, "cloudwatch.amazonaws.com")]


def test_every_alarm_has_an_action_aws_can_deliver() -> None:
    checked = 0
    for stack, template in templates().items():
        for name in of_type(template, "AWS::CloudWatch::Alarm"):
            assert alarm_problems(template, name) == [], f"{stack}/{name}"
            checked += 1
    assert checked >= 6  # queue health, both Redis memories, router and API p95, the canary


def test_the_budgets_notices_reach_the_mailbox_and_the_killer() -> None:
    ops = templates()["ops"]
    (budget,) = of_type(ops, "AWS::Budgets::Budget").values()
    notices = budget["Properties"]["NotificationsWithSubscribers"]
    by_kind = {(n["Notification"]["NotificationType"], n["Notification"]["Threshold"]): n["Subscribers"]
               for n in notices}  # fmt: skip
    assert set(by_kind) == {("FORECASTED", 75), ("ACTUAL", 100)}
    for subscribers in by_kind.values():
        assert {"SubscriptionType": "EMAIL", "Address": {"Ref": "AlertEmail"}} in subscribers
    (sns,) = [s for s in by_kind[("ACTUAL", 100)] if s["SubscriptionType"] == "SNS"]
    (topic,) = refs(sns["Address"])
    assert topic_problems(ops, topic, "budgets.amazonaws.com") == []
    invoke = [p["Properties"] for p in of_type(ops, "AWS::Lambda::Permission").values()
              if topic in refs(p["Properties"].get("SourceArn"))]  # fmt: skip
    assert invoke and invoke[0]["Principal"] == "sns.amazonaws.com"
    assert refs(invoke[0]["FunctionName"]) == ["BudgetKillerArn"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t["Resources"]["AlertTopic"]["Properties"].update(KmsMasterKeyId=AWS_MANAGED_SNS_KEY),
         "under alias/aws/sns"),
        (lambda t: t["Resources"]["QueueHealthAlarm"]["Properties"].pop("AlarmActions"),
         "no unconditional alarm action"),
        (lambda t: t["Resources"]["QueueHealthAlarm"]["Properties"].update(
            AlarmActions={"Fn::If": ["Canary", [{"Ref": "AlertTopic"}], {"Ref": "AWS::NoValue"}]}),
         "no unconditional alarm action"),
        (lambda t: t["Resources"].pop("AlertEmailSubscription"), "no subscriber"),
        (lambda t: t["Resources"]["AlertTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"][0].update(
            Principal={"Service": "events.amazonaws.com"}), "does not admit cloudwatch"),
    ],
)  # fmt: skip
def test_the_walk_catches_an_alarm_that_would_tell_nobody(change: Any, expected: str) -> None:
    ops = templates()["ops"]
    change(ops)
    assert any(expected in p for p in alarm_problems(ops, "QueueHealthAlarm")), alarm_problems(ops, "QueueHealthAlarm")
