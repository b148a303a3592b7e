"""The functions' configuration: defaults, every problem reported at once, and docs/operations.md in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lambdas.common.settings import SETTINGS, Settings, SettingsError

README = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.node_tag == ("env", "tinyllama")
    assert (s.throttle_burst, s.throttle_per_minute, s.start_eta_s) == (5, 20, 90)
    assert s.resize_targets == ("g4dn.xlarge", "t3.small")
    assert s.disable_router is False and s.budget_release_eip is False
    assert s.jwt_token_use == "id"


@pytest.mark.parametrize(("raw", "disabled"), [("", False), ("0", False), ("off", False), ("1", True), ("yes", True)])
def test_the_kill_switch_reads_like_a_switch(raw: str, disabled: bool) -> None:
    assert Settings.from_env({"TL_DISABLE_LAM_ROUTER": raw}).disable_router is disabled


def test_every_invalid_variable_is_reported_at_once() -> None:
    env = {"TL_NODE_TAG": "tinyllama", "TL_THROTTLE_BURST": "0", "TL_RESIZE_MODE": "later", "TL_USD_EUR_RATE": "-1",
           "TL_PRESIGN_TTL_S": "soon"}  # fmt: skip
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    assert "TL_NODE_TAG='tinyllama': must be key=value" in message
    assert "TL_THROTTLE_BURST='0': must be between 1 and 1000" in message
    assert "TL_RESIZE_MODE='later': must be one of async, inline" in message
    assert "TL_USD_EUR_RATE='-1': must be a positive number" in message
    assert "TL_PRESIGN_TTL_S='soon': must be a number" in message


def test_required_variables_are_named_where_they_are_needed() -> None:
    with pytest.raises(SettingsError, match="TL_JWKS_URL is required, TL_REPLY_BUCKET is required"):
        Settings.from_env({}).require("jwks_url", "reply_bucket")


def test_readme_lists_every_variable_with_its_default() -> None:
    text = README.read_text()
    section = text[text.index("### Configuration of the functions") :]
    section = section[: section.index("\n## ")]
    rows = dict(re.findall(r"^\| `(TL_[A-Z_]+)` \| *`?([^|`]*)`? *\|", section, re.MULTILINE))
    assert {k: v.strip() for k, v in rows.items()} == {s.env: s.default for s in SETTINGS.values()}


def test_ping_networks_are_parsed_and_a_bad_one_is_named() -> None:
    assert [str(n) for n in Settings.from_env({"TL_PING_CIDRS": "10.20.0.0/22,::1/128"}).ping_cidrs] == [
        "10.20.0.0/22",
        "::1/128",
    ]
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"TL_PING_CIDRS": "10.20.0.0/22,not-a-network"})
    assert "TL_PING_CIDRS" in str(caught.value)
