"""Lambda entry point of cost_publisher: ``lambdas.cost_publisher.handler.handler``.

Cost Explorer lives in us-east-1 and is slow at times; the whole call has 3 seconds (1 s to connect, 2 s to
read, no retry) so that a 15-minute schedule never piles up. A failed run publishes nothing: the dashboard
shows a gap rather than a made-up number.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.common import metrics
from lambdas.common.costs import CostError, month_to_date
from lambdas.common.logs import log
from lambdas.common.settings import Settings

CE_CONFIG = Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1})


def publish(ce: Any, s: Settings, today: dt.date) -> dict[str, Any]:
    try:
        spend = month_to_date(ce, today, s.usd_eur_rate)
    except (ClientError, BotoCoreError, CostError) as exc:
        log("error", "month-to-date cost not read", error=str(exc))
        return {"published": False, "error": str(exc)}
    metrics.emit(
        {"CurrentSpendEUR": round(spend.eur, 4)},
        namespace="TLFIF/Cost",
        unit="None",
        billed_amount=spend.amount,
        billed_unit=spend.unit,
    )
    return {"published": True, "eur": round(spend.eur, 4), "amount": spend.amount, "unit": spend.unit}


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    import boto3  # noqa: PLC0415

    ce = boto3.client("ce", region_name="us-east-1", config=CE_CONFIG)
    return publish(ce, Settings.from_env(), dt.datetime.now(dt.UTC).date())
