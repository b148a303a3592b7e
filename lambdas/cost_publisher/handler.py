"""Lambda entry point of cost_publisher: ``lambdas.cost_publisher.handler.handler``.

Reads the month-to-date estimate from CloudWatch's billing metrics in us-east-1 (``lambdas.common.costs``) and
publishes it as ``TLFIF/Cost CurrentSpendEUR`` for the dashboard, and as ``status/spend.json`` in the replies bucket
for ``GET /status``. The call has 2 seconds to connect and 2 to read, no retry. A failed run publishes nothing: the
dashboard shows a gap rather than a made-up number.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lambdas.common import costs, metrics
from lambdas.common.app import Entry
from lambdas.common.clients import aws
from lambdas.common.logs import log
from lambdas.common.settings import Settings


def publish(cw: Any, s: Settings, now: dt.datetime, s3: Any | None = None) -> dict[str, Any]:
    try:
        spend = costs.month_to_date(cw, now, s.usd_eur_rate)
    except (ClientError, BotoCoreError, costs.CostError) as exc:
        log("error", "month-to-date cost not read", error=str(exc))
        return {"published": False, "error": str(exc)}
    metrics.emit(
        {"CurrentSpendEUR": round(spend.eur, 4)},
        namespace="TLFIF/Cost",
        unit="None",
        billed_amount=spend.amount,
        billed_unit=spend.unit,
    )
    published = {"published": True, "eur": round(spend.eur, 4), "amount": spend.amount, "unit": spend.unit}
    if s3 is not None and s.reply_bucket:
        try:
            s3.put_object(Bucket=s.reply_bucket, Key=costs.SPEND_KEY, Body=costs.spend_copy(spend, now),
                          ContentType="application/json")  # fmt: skip
            published["copy"] = f"s3://{s.reply_bucket}/{costs.SPEND_KEY}"
        except (ClientError, BotoCoreError) as exc:  # the metric is out; GET /status shows the older copy
            log("warning", "spend copy not written", error=str(exc))
    return published


@dataclass(frozen=True)
class CostPublisher:
    settings: Settings
    cloudwatch: Any
    s3: Any

    @classmethod
    def from_env(cls) -> CostPublisher:
        # the billing metrics live in us-east-1; 2 s to connect and 2 to read, no retry (the next run comes)
        return cls(Settings.from_env(), aws("cloudwatch", region=costs.REGION, timeout_s=2, attempts=1), aws("s3"))

    def handle(self, event: dict[str, Any], context: object = None) -> dict[str, Any]:
        return publish(self.cloudwatch, self.settings, dt.datetime.now(dt.UTC), self.s3)


entry: Entry[CostPublisher] = Entry(lambda context: CostPublisher.from_env())
reset = entry.reset


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    return entry(event, context)
