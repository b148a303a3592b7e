"""Lambda entry point of the router: ``lambdas.router.handler.handler`` (one Router per container)."""

from __future__ import annotations

from typing import Any

from lambdas.common.app import Entry
from lambdas.router.app import Router

entry: Entry[Router] = Entry(lambda context: Router.from_env())
reset = entry.reset


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    return entry(event, context)
