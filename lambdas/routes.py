"""Every HTTP route of the product, in one table: the local edge serves it, the tests hold ``openapi.yaml`` to
it, and the edge template declares the same routes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function: str
    auth: bool

    @property
    def key(self) -> str:
        """API Gateway's route key, e.g. ``GET /result/{id}``."""
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "$"
        found = re.match(pattern, path)
        return None if found is None else found.groupdict()


ROUTES: Final = (
    Route("POST", "/infer", "router", auth=True),
    Route("GET", "/result/{id}", "router", auth=True),
    Route("POST", "/stop", "router", auth=True),
    Route("GET", "/status", "router", auth=True),
    Route("GET", "/ping", "router", auth=False),
    Route("POST", "/resize", "shape_control", auth=True),
    Route("GET", "/queue-health", "queue_health", auth=False),
)


def match(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in ROUTES:
        params = route.match(method, path)
        if params is not None:
            return route, params
    return None


def allowed_methods(path: str) -> list[str]:
    return sorted({r.method for r in ROUTES if r.match(r.method, path) is not None})
