"""Lambda entry point of the router: ``lambdas.router.handler.handler``."""

from __future__ import annotations

from typing import Any

from lambdas.router.app import Router

_router: Router | None = None


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    global _router  # noqa: PLW0603 (one Router per container, built on the first call)
    if _router is None:
        _router = Router.from_env()
    return _router.handle(event, context)


def reset() -> None:
    """Forget the Router, so that the next call reads the environment again (tests, local edge)."""
    global _router  # noqa: PLW0603
    _router = None
