"""The ops dashboard (OPS-004, OPS-602): every widget the stories ask for, and every metric it names published by
something — the project's code for TLFIF, AWS itself for its namespaces."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from devstack.cfn_moto import load
from devstack.deploy import TEMPLATES

ROOT = Path(__file__).resolve().parent.parent
# What AWS publishes by itself, per namespace (each service's CloudWatch metrics page).
AWS_PUBLISHED = {
    "AWS/EC2": {"CPUUtilization", "StatusCheckFailed"},
    "AWS/Lambda": {"Duration", "Errors", "Invocations"},
    "AWS/ApiGateway": {"Latency", "Count", "4xx", "5xx"},
    "AWS/ElastiCache": {"DatabaseMemoryUsagePercentage"},
    "AWS/Billing": {"EstimatedCharges"},  # us-east-1, once "Receive CloudWatch billing alerts" is on
}
# (namespace, metric) the stories ask for: GPU and VRAM %, queue depth, router p95, CurrentSpendEUR, the billing
# estimate, budget overruns, Redis memory, EC2 state.
ASKED = {
    ("TLFIF", "GpuUtilizationPercent"), ("TLFIF", "GpuMemoryUsedPercent"), ("TLFIF", "QueueDepth"),
    ("AWS/Lambda", "Duration"), ("TLFIF/Cost", "CurrentSpendEUR"), ("AWS/Billing", "EstimatedCharges"),
    ("TLFIF", "BudgetStops"), ("TLFIF", "RedisMemoryPercent"), ("AWS/EC2", "StatusCheckFailed"),
}  # fmt: skip


def dashboard() -> dict[str, Any]:
    ops = load((TEMPLATES / "ops.yml").read_text())
    body = ops["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    # ${Param} stands for a string or a number: a number is valid JSON in both places
    return dict(json.loads(re.sub(r'"\$\{[^}]+\}"', '"x"', body).replace("${BudgetAmount}", "20")
                           .replace("${ApiLatencyThresholdMs}", "300")))  # fmt: skip


def metrics(board: dict[str, Any]) -> set[tuple[str, str]]:
    named = set()
    for widget in board["widgets"]:
        for line in widget["properties"].get("metrics", []):
            named.add((line[0], line[1]))
    return named


def published_by_the_code() -> set[tuple[str, str]]:
    """TLFIF metrics the agent (``cloudwatch.add``) and the functions (``metrics.emit``) publish."""
    found = set()
    for path in [*ROOT.glob("node_agent/*.py"), *ROOT.glob("lambdas/**/*.py")]:
        text = path.read_text()
        namespace = "TLFIF/Cost" if 'namespace="TLFIF/Cost"' in text else "TLFIF"
        for name in re.findall(r'\.add\("([A-Za-z]+)"', text) + re.findall(r'"[a-z]+_ms", "([A-Za-z]+)"\)', text):
            found.add(("TLFIF", name))  # cloudwatch.add("X", …), and the job timings' (histogram, key, "X") table
        for block in re.findall(r"emit\(\s*\{([^}]*)\}", text):
            found.update((namespace, name) for name in re.findall(r'"([A-Za-z]+)":', block))
    found.update(("TLFIF", n) for n in ("GpuUtilizationPercent", "GpuMemoryUsedPercent") if n in
                 (ROOT / "node_agent" / "metrics.py").read_text())  # fmt: skip
    return found


def unpublished(named: set[tuple[str, str]]) -> set[tuple[str, str]]:
    code = published_by_the_code()
    return {(ns, m) for ns, m in named if (ns, m) not in code and m not in AWS_PUBLISHED.get(ns, set())}


def test_the_dashboard_shows_what_the_stories_ask_for() -> None:
    assert metrics(dashboard()) >= ASKED


def test_every_metric_on_the_dashboard_is_published_by_something() -> None:
    named = metrics(dashboard())
    assert len(named) > 10
    assert unpublished(named) == set()


def test_the_check_catches_a_metric_nothing_publishes() -> None:
    assert unpublished({("TLFIF", "QueueLength"), ("AWS/EC2", "GpuTemperature")}) == {
        ("TLFIF", "QueueLength"), ("AWS/EC2", "GpuTemperature")}  # fmt: skip
    assert unpublished({("TLFIF", "QueueDepth"), ("TLFIF/Cost", "CurrentSpendEUR")}) == set()
