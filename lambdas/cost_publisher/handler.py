"""Lambda entry point of cost_publisher: ``lambdas.cost_publisher.handler.handler``.

Reads the month-to-date estimate from CloudWatch's billing metrics in us-east-1 (``lambdas.common.costs``) and
publishes it as ``TLFIF/Cost CurrentSpendEUR`` for the dashboard. The call has 3 seconds (1 s to connect, 2 s to
read, no retry). A failed run publishes nothing: the dashboard shows a gap rather than a made-up number.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from lambdas.common import costs, metrics
from lambdas.common.logs import log
from lambdas.common.settings import Settings

CW_CONFIG = Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1})


def publish(cw: Any, s: Settings, now: dt.datetime) -> dict[str, Any]:
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
    return {"published": True, "eur": round(spend.eur, 4), "amount": spend.amount, "unit": spend.unit}


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    import boto3  # noqa: PLC0415

    cw = boto3.client("cloudwatch", region_name=costs.REGION, config=CW_CONFIG)
    return publish(cw, Settings.from_env(), dt.datetime.now(dt.UTC))
