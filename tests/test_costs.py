"""The idle cost, computed from the templates and the price table (devstack/costs.py), and docs/aws.md in step."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from devstack import costs

README = Path(__file__).resolve().parent.parent / "docs" / "aws.md"


def test_every_resource_of_the_default_deployment_is_priced_or_free_at_rest() -> None:
    computed = costs.at_rest()
    assert computed.unpriced == []
    whats = [what for what, _, _ in computed.rows]
    assert any("30 GiB gp3" in what for what in whats)
    assert not any("Elastic IP" in what or "ElastiCache" in what or "canary" in what for what in whats)


def test_a_resource_that_costs_at_rest_shows_up_and_an_unknown_one_fails() -> None:
    templates = copy.deepcopy(costs.templates())
    templates["network"]["Resources"]["Nat"] = {"Type": "AWS::EC2::NatGateway", "Properties": {}}
    templates["network"]["Resources"]["Db"] = {"Type": "AWS::RDS::DBInstance", "Properties": {}}
    computed = costs.at_rest(templates)
    assert computed.unpriced == ["network/Db: AWS::RDS::DBInstance"]
    nat = [usd for what, usd, _ in computed.rows if what.startswith("NAT gateway")]
    assert nat and nat[0] > 30


def test_elasticache_mode_pays_for_redis_by_the_hour() -> None:
    templates = copy.deepcopy(costs.templates())
    templates["queue"]["Parameters"]["EnableRedis"]["Default"] = "true"
    saved = dict(costs.DEFAULT_PARAMETERS)
    costs.DEFAULT_PARAMETERS.pop("queue")  # type: ignore[attr-defined]
    try:
        rows = costs.at_rest(templates).rows
    finally:
        costs.DEFAULT_PARAMETERS.update(saved)  # type: ignore[attr-defined]
    assert [round(usd, 2) for what, usd, _ in rows if what.startswith("ElastiCache")] == [27.01]


def test_schedules_are_counted_per_month() -> None:
    assert costs.runs_per_month("rate(5 minutes)", 730) == 8760
    assert costs.runs_per_month("cron(50 6 * * ? *)", 730) == pytest.approx(730 / 24)
    assert costs.runs_per_month("rate(1 day)", 730) == pytest.approx(730 / 24)
    with pytest.raises(ValueError, match="only rate"):
        costs.runs_per_month("cron(0 */8 * * ? *)", 730)


def test_the_readme_shows_the_computed_table() -> None:
    assert costs.at_rest().table() in README.read_text()
