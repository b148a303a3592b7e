"""Configuration: defaults, every invalid variable reported, and docs/operations.md in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node_agent.settings import SETTINGS, Settings, SettingsError

README = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def test_defaults_need_only_the_bucket() -> None:
    s = Settings.from_env({"TL_REPLY_BUCKET": "b"})
    assert s.backend_url == "http://127.0.0.1:8000"
    assert s.idle_minutes == 5
    assert s.idle_s == 300
    assert s.stop_mode == "stop"
    assert s.max_attempts == 3
    assert s.cloudwatch is True


def test_every_invalid_variable_is_reported_at_once() -> None:
    env = {
        "TL_IDLE_MINUTES": "0",
        "TL_MAX_CONCURRENCY": "many",
        "TL_STOP_MODE": "halt",
        "TL_BACKEND_URL": "localhost:8000",
    }
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    for name in ("TL_REPLY_BUCKET is required", "TL_IDLE_MINUTES", "TL_MAX_CONCURRENCY", "TL_STOP_MODE"):
        assert name in message
    assert "TL_BACKEND_URL='localhost:8000': must be an http://host[:port] URL" in message


@pytest.mark.parametrize("raw", ["https://127.0.0.1:8000", "http://", "http://127.0.0.1:8000/?x=1", "http://h:99999"])
def test_the_model_server_url_is_plain_http_to_a_host(raw: str) -> None:
    """The agent's client speaks plain HTTP (node_agent/http1.py): anything else is refused at start, by name."""
    with pytest.raises(SettingsError, match=r"TL_BACKEND_URL=.*must be an http://host\[:port\] URL"):
        Settings.from_env({"TL_REPLY_BUCKET": "b", "TL_BACKEND_URL": raw})


def test_readme_lists_every_variable_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `(TL_[A-Z_]+)` \| *`?([^|`]*)`? *\|", README.read_text(), re.MULTILINE))
    expected = {s.env: (s.default or "").strip() for s in SETTINGS.values()}
    assert {k: v.strip() for k, v in rows.items() if k in expected} == expected
    assert set(expected) <= set(rows)
