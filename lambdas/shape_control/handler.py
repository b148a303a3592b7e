"""Lambda entry point of shape_control: ``lambdas.shape_control.handler.handler`` (one app per container)."""

from __future__ import annotations

import json
from typing import Any

from lambdas.common.app import Entry
from lambdas.common.clients import aws
from lambdas.shape_control.app import Dispatch, ShapeControl


def build(context: object) -> ShapeControl:
    """The app, with ``dispatch`` invoking this same function asynchronously (the resize's work) on AWS."""
    function = str(getattr(context, "invoked_function_arn", "") or "")
    dispatch: Dispatch | None = None
    if function:
        lam = aws("lambda")

        def dispatch(job: dict[str, Any]) -> None:
            lam.invoke(FunctionName=function, InvocationType="Event", Payload=json.dumps(job).encode())

    return ShapeControl.from_env(aws("ec2"), dispatch, aws("service-quotas"))


entry: Entry[ShapeControl] = Entry(build)
reset = entry.reset


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    return entry(event, context)
