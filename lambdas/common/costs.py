"""Month-to-date spend from CloudWatch's billing metrics (``AWS/Billing EstimatedCharges``), in euros.

Why not Cost Explorer: each Cost Explorer request is billed (0.01 USD), and a daily publisher plus a daily summary
cost €0.52 a month — a fifth of the idle service. The billing metrics carry the same month-to-date estimate, in
total and per service, several times a day, and reading them is a few CloudWatch API calls within the always-free
million. They exist only in us-east-1 and only once "Receive CloudWatch billing alerts" is on in the Billing
console's preferences (a one-time switch that cannot be turned off; AWS: "Scenario: Monitor your estimated charges
using CloudWatch", https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/gs_monitor_estimated_charges_with_cloudwatch.html).
Without it there is no data, and that is said, not published as zero.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

NAMESPACE: Final = "AWS/Billing"
METRIC: Final = "EstimatedCharges"
REGION: Final = "us-east-1"  # where AWS keeps the billing metrics of every region
# AWS updates the estimate several times a day; two days back always holds the latest one.
LOOKBACK: Final = dt.timedelta(days=2)
PERIOD_S: Final = 6 * 3600
CURRENCY: Final = "USD"  # the billing metrics' Currency dimension
NOT_ENABLED: Final = (
    f"no {NAMESPACE} {METRIC} in {REGION} for two days: turn on 'Receive CloudWatch billing alerts' in the Billing "
    "console's preferences (the data starts about 15 minutes later)"
)


class CostError(Exception):
    """The billing metrics cannot be turned into a month-to-date spend in euros."""


@dataclass(frozen=True)
class Spend:
    eur: float
    amount: float
    unit: str
    by_service_eur: dict[str, float]


def to_eur(amount: float, unit: str, usd_eur_rate: float) -> float:
    if unit == "EUR":
        return amount
    if unit == "USD":
        return amount * usd_eur_rate
    raise CostError(f"the account is billed in {unit}; only EUR and USD are converted")


def latest_this_month(cw: CloudWatchClient, dimensions: list[dict[str, str]], now: dt.datetime) -> float | None:
    """The newest estimate of this month for one metric; 0.0 when the only data is last month's (the estimate
    starts again at zero on the first), None when there is no data at all."""
    answer = cw.get_metric_statistics(
        Namespace=NAMESPACE, MetricName=METRIC, Dimensions=dimensions,  # type: ignore[arg-type]
        StartTime=now - LOOKBACK, EndTime=now, Period=PERIOD_S, Statistics=["Maximum"],
    )  # fmt: skip
    points = answer.get("Datapoints", [])
    if not points:
        return None
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    this_month = [p for p in points if p["Timestamp"] >= first]
    if not this_month:
        return 0.0
    return float(max(this_month, key=lambda p: p["Timestamp"])["Maximum"])


def _currency(dimensions: list[dict[str, str]]) -> str:
    return next((d["Value"] for d in dimensions if d["Name"] == "Currency"), CURRENCY)


def month_to_date(cw: CloudWatchClient, now: dt.datetime, usd_eur_rate: float, *, by_service: bool = False) -> Spend:
    """The account's estimated charges since the first of ``now``'s month (UTC), optionally per service."""
    total = latest_this_month(cw, [{"Name": "Currency", "Value": CURRENCY}], now)
    if total is None:
        raise CostError(NOT_ENABLED)
    services: dict[str, float] = {}
    if by_service:
        pages = cw.get_paginator("list_metrics").paginate(
            Namespace=NAMESPACE, MetricName=METRIC, Dimensions=[{"Name": "ServiceName"}]
        )
        for metric in (m for page in pages for m in page.get("Metrics", [])):
            service_dims = [{"Name": d["Name"], "Value": d["Value"]} for d in metric.get("Dimensions", [])]
            name = next(d["Value"] for d in service_dims if d["Name"] == "ServiceName")
            amount = latest_this_month(cw, service_dims, now)
            if amount:
                services[name] = to_eur(amount, _currency(service_dims), usd_eur_rate)
    return Spend(eur=to_eur(total, CURRENCY, usd_eur_rate), amount=total, unit=CURRENCY, by_service_eur=services)


def forecast_month(spend_eur: float, today: dt.date) -> float:
    """Straight-line forecast for the whole month from the spend so far (days elapsed, today included)."""
    days = calendar.monthrange(today.year, today.month)[1]
    return spend_eur / today.day * days


SPEND_KEY: Final = "status/spend.json"
"""The month's spend as ``cost_publisher`` last read it, in the replies bucket, for ``GET /status``: the router runs in
the private subnets, which reach S3 (the gateway endpoint) but not CloudWatch."""


def spend_copy(spend: Spend, now: dt.datetime) -> bytes:
    return json.dumps({"eur": round(spend.eur, 4), "amount": spend.amount, "unit": spend.unit,
                       "at": now.isoformat(timespec="seconds")}).encode()  # fmt: skip
