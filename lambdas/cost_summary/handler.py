"""Lambda entry point of cost_summary: ``lambdas.cost_summary.handler.handler``.

Once a day (the ops stack's schedule) mails the month-to-date cost, the straight-line forecast against the budget
and the cost by service to the cost topic; when the cost cannot be read, the mail says so and what to do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from lambdas.common import costs
from lambdas.common.app import Entry
from lambdas.common.clients import aws
from lambdas.common.costs import Spend, forecast_month
from lambdas.common.logs import log
from lambdas.common.settings import Settings


def summary_text(spend: Spend, today: dt.date, budget_eur: float) -> tuple[str, str]:
    forecast = forecast_month(spend.eur, today)
    state = "over" if forecast > budget_eur else "within"
    subject = f"tinyllama-shape: €{spend.eur:.2f} so far in {today:%B %Y}"
    lines = [
        f"Cost of the tinyllama-shape account, {today.replace(day=1):%d %b} – {today:%d %b %Y}:",
        "",
        f"  month to date   €{spend.eur:8.2f}",
        f"  month forecast  €{forecast:8.2f}  (straight line; {state} the €{budget_eur:.2f} budget)",
        "",
    ]
    if spend.by_service_eur:
        lines.append("By service:")
        ranked = sorted(spend.by_service_eur.items(), key=lambda kv: kv[1], reverse=True)
        lines.extend(f"  €{eur:8.2f}  {name}" for name, eur in ranked if eur >= 0.005)  # noqa: PLR2004
        lines.append("")
    if spend.unit != "EUR":
        lines.append(f"Estimated in {spend.unit}: {spend.amount:.2f} {spend.unit}, converted at the configured rate.")
    lines.append("From CloudWatch's billing metrics (AWS/Billing EstimatedCharges), updated several times a day.")
    return subject[:99], "\n".join(lines)


def send(cw: Any, sns: Any, s: Settings, now: dt.datetime) -> dict[str, Any]:
    s.require("cost_topic_arn")
    today = now.date()
    try:
        spend = costs.month_to_date(cw, now, s.usd_eur_rate, by_service=True)
    except costs.CostError as exc:  # the mail still goes, and says what to do
        log("error", "month-to-date cost not read", error=str(exc))
        subject = f"tinyllama-shape: the cost of {today:%B %Y} cannot be read"
        sns.publish(TopicArn=s.cost_topic_arn, Subject=subject, Message=f"{exc}.")
        return {"sent": True, "subject": subject, "error": str(exc)}
    subject, text = summary_text(spend, today, s.budget_eur)
    sns.publish(TopicArn=s.cost_topic_arn, Subject=subject, Message=text)
    log("info", "cost summary sent", eur=round(spend.eur, 2), topic=s.cost_topic_arn)
    return {"sent": True, "subject": subject}


@dataclass(frozen=True)
class CostSummary:
    settings: Settings
    cloudwatch: Any
    sns: Any

    @classmethod
    def from_env(cls) -> CostSummary:
        return cls(Settings.from_env(), aws("cloudwatch", region=costs.REGION), aws("sns"))

    def handle(self, event: dict[str, Any], context: object = None) -> dict[str, Any]:
        return send(self.cloudwatch, self.sns, self.settings, dt.datetime.now(dt.UTC))


entry: Entry[CostSummary] = Entry(lambda context: CostSummary.from_env())
reset = entry.reset


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    return entry(event, context)
