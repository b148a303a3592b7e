"""Reading ``TL_*`` settings from the environment: one table of variables, parsers, and every problem at once.

Shared by the node agent (``node_agent/settings.py``) and the functions (``lambdas/common/settings.py``), so
that both read, check and report their variables the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Parser = Callable[[str], Any]


@dataclass(frozen=True)
class Setting:
    env: str
    default: str | None
    """``None``: the variable is required."""
    help: str


def read(
    specs: Mapping[str, Setting], parsers: Mapping[str, Parser], env: Mapping[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """Parse every variable of ``specs``; returns the values by name and one line per problem."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, spec in specs.items():
        raw = env.get(spec.env, spec.default)
        if raw is None or (spec.default is None and not raw.strip()):
            problems.append(f"{spec.env} is required: {spec.help}")
            continue
        try:
            values[name] = parsers.get(name, text)(raw)
        except ValueError as exc:
            reason = str(exc)
            if reason.startswith(("invalid literal", "could not convert")):
                reason = "must be a number"
            problems.append(f"{spec.env}={raw!r}: {reason}")
    return values, problems


def text(raw: str) -> str:
    return raw.strip()


def int_between(lo: int, hi: int) -> Parser:
    def parse(raw: str) -> int:
        value = int(raw)
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def float_above(lo: float, hi: float) -> Parser:
    """A number greater than ``lo`` and at most ``hi``."""

    def parse(raw: str) -> float:
        value = float(raw)
        if not lo < value <= hi:
            raise ValueError(f"must be greater than {lo} and at most {hi}")
        return value

    return parse


def choice(*allowed: str) -> Parser:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return raw

    return parse


def switch(raw: str) -> bool:
    """``on`` or ``off``."""
    return bool(choice("on", "off")(raw) == "on")


def url(*schemes: str) -> Parser:
    def parse(raw: str) -> str:
        if not raw.startswith(tuple(f"{s}://" for s in schemes)):
            raise ValueError(f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return raw.rstrip("/")

    return parse
