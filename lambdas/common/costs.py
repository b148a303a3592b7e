"""Month-to-date spend from Cost Explorer, in euros."""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_ce import CostExplorerClient


class CostError(Exception):
    """Cost Explorer answered something that cannot be turned into euros."""


@dataclass(frozen=True)
class Spend:
    eur: float
    amount: float
    unit: str
    by_service_eur: dict[str, float]


def month_period(today: dt.date) -> dict[str, str]:
    """From the first of the month to tomorrow (Cost Explorer's end is exclusive, so today is included)."""
    return {"Start": today.replace(day=1).isoformat(), "End": (today + dt.timedelta(days=1)).isoformat()}


def to_eur(amount: float, unit: str, usd_eur_rate: float) -> float:
    if unit == "EUR":
        return amount
    if unit == "USD":
        return amount * usd_eur_rate
    raise CostError(f"the account is billed in {unit}; only EUR and USD are converted")


def month_to_date(ce: CostExplorerClient, today: dt.date, usd_eur_rate: float, *, by_service: bool = False) -> Spend:
    kwargs = {"GroupBy": [{"Type": "DIMENSION", "Key": "SERVICE"}]} if by_service else {}
    answer = ce.get_cost_and_usage(
        TimePeriod=month_period(today),  # type: ignore[arg-type]
        Granularity="MONTHLY",
        Metrics=["UnblendedCost"],
        **kwargs,  # type: ignore[arg-type]
    )
    total, unit = 0.0, "USD"
    services: dict[str, float] = {}
    for period in answer.get("ResultsByTime", []):
        if "UnblendedCost" in period.get("Total", {}):
            cost = period["Total"]["UnblendedCost"]
            total += float(cost["Amount"])
            unit = cost.get("Unit", unit)
        for group in period.get("Groups", []):
            cost = group["Metrics"]["UnblendedCost"]
            unit = cost.get("Unit", unit)
            name = group["Keys"][0]
            services[name] = services.get(name, 0.0) + float(cost["Amount"])
    if by_service and services:
        total = sum(services.values())
    by_eur = {name: to_eur(v, unit, usd_eur_rate) for name, v in services.items()}
    return Spend(eur=to_eur(total, unit, usd_eur_rate), amount=total, unit=unit, by_service_eur=by_eur)


def forecast_month(spend_eur: float, today: dt.date) -> float:
    """Straight-line forecast for the whole month from the spend so far (days elapsed, today included)."""
    days = calendar.monthrange(today.year, today.month)[1]
    return spend_eur / today.day * days
