"""What the default deployment costs at rest, computed from the templates and the price table.

Every resource the default deployment creates is walked (conditions evaluated with the parameters the aws_stack
role passes by default); each resource type is either priced or listed as free at rest, and a type that is
neither is reported, so that a new resource cannot slip past the cost table. The prices and the always-free
allowances are in ``roles/aws_stack/files/prices.yml``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from devstack.cfn_moto import load

ROLE: Final = Path(__file__).resolve().parent.parent / "roles" / "aws_stack" / "files"
TEMPLATES: Final = ROLE / "templates"
PRICES: Final = ROLE / "prices.yml"

# What the aws_stack role passes by default where a template's own default differs (aws_stack_queue: node, the
# canary off); the rest are the templates' defaults.
DEFAULT_PARAMETERS: Final = {
    "queue": {"EnableRedis": "false"},
    "node": {"QueueMode": "node"},
    "ops": {"EnableCanary": "false"},
}
# Billed per use only (requests, storage written, users), or not at all: nothing while nobody uses the service.
FREE_AT_REST: Final = frozenset(
    {
        "AWS::EC2::VPC", "AWS::EC2::VPCCidrBlock", "AWS::EC2::InternetGateway", "AWS::EC2::VPCGatewayAttachment",
        "AWS::EC2::EgressOnlyInternetGateway", "AWS::EC2::Subnet", "AWS::EC2::RouteTable", "AWS::EC2::Route",
        "AWS::EC2::SubnetRouteTableAssociation", "AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupIngress",
        "AWS::IAM::Role", "AWS::IAM::InstanceProfile", "AWS::S3::Bucket", "AWS::Logs::LogGroup",
        "AWS::Logs::QueryDefinition",
        "AWS::Cognito::UserPool", "AWS::Cognito::UserPoolClient", "AWS::Cognito::UserPoolDomain",
        "AWS::Cognito::UserPoolGroup", "AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Authorizer",
        "AWS::ApiGatewayV2::Integration", "AWS::ApiGatewayV2::Route", "AWS::ApiGatewayV2::Stage",
        "AWS::Lambda::Permission", "AWS::SNS::Topic", "AWS::SNS::Subscription", "AWS::SNS::TopicPolicy",
        "AWS::ElastiCache::SubnetGroup",
        "AWS::Budgets::Budget",  # the first two budgets of an account are free (ours is one)
    }
)  # fmt: skip
# A schedule's target, by the ops stack's parameter that carries its ARN.
SCHEDULE_TARGETS: Final = {"CostPublisherArn": "cost_publisher", "CostSummaryArn": "cost_summary",
                           "QueueHealthArn": "queue_health"}  # fmt: skip


@dataclass
class Costs:
    rows: list[tuple[str, float, str]] = field(default_factory=list)
    """(what, USD a month after the always-free allowances, note)"""
    unpriced: list[str] = field(default_factory=list)
    list_usd: float = 0.0
    """The month at list prices, without any free allowance."""
    usd_eur: float = 0.86

    @property
    def usd(self) -> float:
        return sum(usd for _, usd, _ in self.rows)

    @property
    def eur(self) -> float:
        return self.usd * self.usd_eur

    def table(self) -> str:
        lines = ["| at rest, default deployment | €/month | how |", "| --- | --- | --- |"]
        lines += [f"| {what} | €{usd * self.usd_eur:.2f} | {note} |" for what, usd, note in self.rows]
        lines.append(f"| **idle total** | **€{self.eur:.2f}** | without the always-free allowances: "
                     f"€{self.list_usd * self.usd_eur:.2f} |")  # fmt: skip
        return "\n".join(lines)


def prices() -> dict[str, Any]:
    return dict(yaml.safe_load(PRICES.read_text()))


def templates() -> dict[str, dict[str, Any]]:
    return {path.stem: load(path.read_text()) for path in sorted(TEMPLATES.glob("*.yml"))}


def _value(node: Any, params: dict[str, str], conditions: dict[str, Any]) -> Any:
    """A parameter reference or a condition function, evaluated; anything else as it is."""
    if not (isinstance(node, dict) and len(node) == 1):
        return node
    ((key, arg),) = node.items()
    args = arg if isinstance(arg, list) else [arg]
    evaluated: Callable[[], Any] | None = {
        "Ref": lambda: params.get(arg, arg),
        "Fn::Equals": lambda: str(_value(args[0], params, conditions)) == str(_value(args[1], params, conditions)),
        "Fn::Not": lambda: not _value(args[0], params, conditions),
        "Fn::And": lambda: all(_value(a, params, conditions) for a in args),
        "Fn::Or": lambda: any(_value(a, params, conditions) for a in args),
        "Condition": lambda: _value(conditions[arg], params, conditions),
    }.get(key)
    return node if evaluated is None else evaluated()


def deployed(all_templates: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every resource of the default deployment: (stack, logical id, resource)."""
    for stack, template in all_templates.items():
        params = {name: str(p.get("Default", "")) for name, p in (template.get("Parameters") or {}).items()}
        params.update(DEFAULT_PARAMETERS.get(stack, {}))
        conditions = template.get("Conditions") or {}
        for name, resource in (template.get("Resources") or {}).items():
            if "Condition" in resource and not _value(conditions[resource["Condition"]], params, conditions):
                continue
            yield stack, name, resource


def runs_per_month(expression: str, hours: float) -> float:
    rate = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression)
    if rate:
        per_hour = {"minute": 60, "hour": 1, "day": 1 / 24}[rate[2].rstrip("s")]
        return hours * per_hour / int(rate[1])
    cron = re.fullmatch(r"cron\((\S+) (\S+) \* \* \? \*\)", expression)
    if cron and cron[1].isdigit() and cron[2].isdigit():
        return hours / 24
    raise ValueError(f"schedule {expression!r}: only rate(...) and daily cron(m h * * ? *) are modelled")


class _Walk:
    """Prices one resource at a time; counts what the always-free allowances apply to."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        self.p = {name: float(entry["usd"]) for name, entry in table["prices"].items()}
        self.hours = float(table["hours_per_month"])
        self.costs = Costs(usd_eur=float(table["usd_eur"]))
        self.counts = {"alarms": 0, "dashboards": 0}
        self.lambda_requests = self.lambda_gb_s = 0.0

    def add(self, what: str, usd: float, note: str) -> None:
        self.costs.rows.append((what, usd, note))
        self.costs.list_usd += usd

    def resource(self, stack: str, name: str, kind: str, props: dict[str, Any]) -> None:
        hourly = {"AWS::EC2::EIP": ("public_ipv4_hour", "Elastic IP", "billed by the hour, attached or not"),
                  "AWS::EC2::NatGateway": ("nat_gateway_hour", "NAT gateway", "by the hour, before data")}  # fmt: skip
        if kind in hourly:
            price, label, note = hourly[kind]
            self.add(f"{label} {name}", self.hours * self.p[price], note)
        elif kind == "AWS::EC2::LaunchTemplate":
            self.volumes(stack, name, props)
        elif kind == "AWS::EC2::VPCEndpoint" and props.get("VpcEndpointType", "Gateway") != "Gateway":
            zones = len(props.get("SubnetIds", [])) or 1
            self.add(f"interface endpoint {name}", self.hours * zones * self.p["interface_endpoint_az_hour"],
                     f"{zones} zone(s)")  # fmt: skip
        elif kind == "AWS::ElastiCache::ReplicationGroup":
            node_type = str(props["CacheNodeType"]).replace(".", "_")
            clusters = int(props.get("NumCacheClusters", 1))
            self.add(f"ElastiCache {props['CacheNodeType']}",
                     self.hours * clusters * self.p[f"elasticache_{node_type}_hour"], "by the hour")  # fmt: skip
        elif kind in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard"):
            self.counts["alarms" if kind.endswith("Alarm") else "dashboards"] += 1
        elif kind == "AWS::Events::Rule" and "ScheduleExpression" in props:
            self.schedule(stack, name, props)
        elif kind == "AWS::Synthetics::Canary":
            minutes = re.fullmatch(r"rate\((\d+) minutes?\)", props["Schedule"]["Expression"])
            runs = self.hours * 60 / int(minutes[1]) if minutes else self.hours
            self.add(f"canary {name}", runs * self.p["synthetics_run"], f"{runs:.0f} runs")
        elif kind in ("AWS::KMS::Key", "AWS::SecretsManager::Secret"):
            price = "kms_key_month" if kind == "AWS::KMS::Key" else "secret_month"
            self.add(f"{kind.split('::')[1]} {name}", self.p[price], "a month")
        elif kind not in FREE_AT_REST and kind not in ("AWS::EC2::Instance", "AWS::EC2::VPCEndpoint",
                                                       "AWS::Events::Rule"):  # fmt: skip
            # (an instance is stopped at rest: its volume is priced from the launch template, its IPv4 only while
            # it runs; a gateway endpoint is free; an event-pattern rule runs only when its event happens)
            self.costs.unpriced.append(f"{stack}/{name}: {kind}")

    def volumes(self, stack: str, name: str, props: dict[str, Any]) -> None:
        for mapping in props["LaunchTemplateData"].get("BlockDeviceMappings", []):
            ebs = mapping["Ebs"]
            if ebs.get("VolumeType") != "gp3":
                self.costs.unpriced.append(f"{stack}/{name}: volume type {ebs.get('VolumeType')}")
                continue
            price = self.p["ebs_gp3_gb_month"]
            size = ebs["VolumeSize"]
            if isinstance(size, dict):  # a parameter (RootVolumeGiB): its default, as the aws_stack role passes it
                size = templates()[stack]["Parameters"][size["Ref"]]["Default"]
            what = f"node root volume, {size} GiB gp3 (kept while stopped)"
            self.add(what, float(size) * price, f"${price}/GB-month")

    def schedule(self, stack: str, name: str, props: dict[str, Any]) -> None:
        runs = runs_per_month(props["ScheduleExpression"], self.hours)
        for target in props.get("Targets", []):
            arn = target["Arn"]
            function = SCHEDULE_TARGETS.get(arn.get("Ref", "")) if isinstance(arn, dict) else None
            if function is None:
                self.costs.unpriced.append(f"{stack}/{name}: schedule target {arn}")
                continue
            run = self.table["scheduled_runs"][function]
            self.lambda_requests += runs
            self.lambda_gb_s += runs * float(run["seconds"]) * 0.125
            usd = runs * sum(run.get(f"{kind}_requests", 0) * self.p[f"{kind}_request"]
                             for kind in ("s3_list", "s3_put", "cloudwatch_api"))  # fmt: skip
            self.add(f"{function} {props['ScheduleExpression']} ({runs:.0f} runs)", usd, run.get("note") or _calls(run))

    def allowances(self) -> None:
        free, p = self.table["always_free"], self.p
        metrics = len(self.table["metrics_at_rest"])
        for what, count, allowance, price in (
            ("CloudWatch alarms", self.counts["alarms"], free["cloudwatch_alarms"], p["cloudwatch_alarm_month"]),
            ("CloudWatch dashboards", self.counts["dashboards"], free["cloudwatch_dashboards"],
             p["cloudwatch_dashboard_month"]),
            ("custom metrics published at rest", metrics, free["cloudwatch_metrics"], p["cloudwatch_metric_month"]),
        ):  # fmt: skip
            self.costs.rows.append((f"{what}: {count}", max(0, count - allowance) * price, f"{allowance} always free"))
            self.costs.list_usd += count * price
        requests, gb_s = self.lambda_requests, self.lambda_gb_s
        usd = (max(0.0, requests - free["lambda_requests"]) * p["lambda_request"]
               + max(0.0, gb_s - free["lambda_gb_seconds"]) * p["lambda_gb_second"])  # fmt: skip
        self.costs.rows.append((f"Lambda: {requests:.0f} scheduled runs", usd,
                                f"{gb_s:.0f} GB-s; 1M requests and 400,000 GB-s always free"))  # fmt: skip
        self.costs.list_usd += requests * p["lambda_request"] + gb_s * p["lambda_gb_second"]


def at_rest(all_templates: dict[str, dict[str, Any]] | None = None) -> Costs:
    """The month at rest of the default deployment (or of ``all_templates``)."""
    walk = _Walk(prices())
    for stack, name, resource in deployed(all_templates or templates()):
        walk.resource(stack, name, resource["Type"], resource.get("Properties") or {})
    walk.allowances()
    return walk.costs


def _calls(run: dict[str, Any]) -> str:
    calls = [
        f"{run[k]} {k.removesuffix('_requests').replace('_', ' ')} request(s)" for k in run if k.endswith("_requests")
    ]
    return ", ".join(calls) + " a run"


def hourly_usd(shape: str) -> float:
    """A running node of this type: the instance and its public IPv4 (the volume is in the idle cost)."""
    p = prices()["prices"]
    return float(p[f"ec2_{shape.replace('.', '_')}_hour"]["usd"]) + float(p["public_ipv4_hour"]["usd"])


def ceil_cents(eur: float) -> float:
    return math.ceil(eur * 100) / 100
