"""Lambda entry point of shape_control: ``lambdas.shape_control.handler.handler``."""

from __future__ import annotations

import json
from typing import Any

from lambdas.common.clients import aws
from lambdas.shape_control.app import ShapeControl

_app: ShapeControl | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _app  # noqa: PLW0603 (one per container)
    if _app is None:
        function = getattr(context, "invoked_function_arn", "")
        lam = aws("lambda") if function else None

        def invoke_self(job: dict[str, Any]) -> None:
            if lam is not None:
                lam.invoke(FunctionName=function, InvocationType="Event", Payload=json.dumps(job).encode())

        _app = ShapeControl.from_env(aws("ec2"), invoke_self if function else None, aws("service-quotas"))
    return _app.handle(event)


def reset() -> None:
    global _app  # noqa: PLW0603
    _app = None
