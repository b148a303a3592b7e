"""Reading ``TL_*`` settings from the environment: each setting declared once, and every problem at once.

A settings class is a frozen dataclass whose every field is a ``setting(...)``: the variable's name, its default
(``None``: required), its meaning and its parser live on that one line, and the field's annotation is the parsed
type. ``declared(cls)`` lists them (the tables in docs/operations.md are checked against it), ``load(cls, env)``
reads them.
Shared by the node agent (``node_agent/settings.py``), its door and watchdog, and the functions
(``lambdas/common/settings.py``), so that all of them read, check and report their variables the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, TypeVar

Parser = Callable[[str], Any]
T = TypeVar("T")
_KEY: Final = "tl_setting"


def text(raw: str) -> str:
    return raw.strip()


@dataclass(frozen=True)
class Setting:
    env: str
    default: str | None
    """``None``: the variable is required."""
    help: str
    parse: Parser = text


def setting(env: str, default: str | None, help: str, parse: Parser = text) -> Any:
    """A settings field: read from ``env`` (``default`` when unset; ``None``: required), parsed by ``parse``."""
    return field(metadata={_KEY: Setting(env, default, help, parse)})


def same(spec: Setting) -> Any:
    """A settings field declared elsewhere (the watchdog reads the agent's ``TL_REDIS_URL``), not copied."""
    return field(metadata={_KEY: spec})


def declared(cls: type) -> dict[str, Setting]:
    """The settings of ``cls`` by field name, in declaration order."""
    return {f.name: f.metadata[_KEY] for f in fields(cls)}


def read(specs: Mapping[str, Setting], env: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Parse every variable of ``specs``; returns the values by name and one line per problem."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, spec in specs.items():
        raw = env.get(spec.env, spec.default)
        if raw is None or (spec.default is None and not raw.strip()):
            problems.append(f"{spec.env} is required: {spec.help}")
            continue
        try:
            values[name] = spec.parse(raw)
        except ValueError as exc:
            reason = str(exc)
            if reason.startswith(("invalid literal", "could not convert")):
                reason = "must be a number"
            problems.append(f"{spec.env}={raw!r}: {reason}")
    return values, problems


def load(cls: type[T], env: Mapping[str, str], error: type[ValueError]) -> T:
    """``cls`` read from ``env``, or ``error`` listing every invalid or missing variable on one line (one log
    record, in the journal as in CloudWatch)."""
    values, problems = read(declared(cls), env)
    if problems:
        raise error("invalid configuration: " + "; ".join(problems))
    return cls(**values)


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
