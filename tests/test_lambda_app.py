"""The one way every function is written (``lambdas.common.app``): an app per container, built on the first call,
and one HTTP wrapper (routes, open routes, the kill switch, the token, the request log)."""

from __future__ import annotations

import importlib
import json

import pytest

from devstack.stack import Stack
from lambdas.common.app import Entry
from lambdas.common.settings import SettingsError
from lambdas.package import FUNCTIONS
from lambdas.queue_health import handler as queue_health
from lambdas.shape_control import handler as shape_control
from tests.support import SigningKey, body_of, setenv, v2_event

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_is_an_entry_whose_handler_calls_it(function: str) -> None:
    module = importlib.import_module(f"lambdas.{function}.handler")
    assert isinstance(module.entry, Entry)
    assert module.reset == module.entry.reset
    assert callable(module.handler)


def test_the_app_is_built_once_per_container_and_again_after_reset(
    lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    setenv(monkeypatch, lambda_env)
    queue_health.reset()
    assert queue_health.handler({}, None)["redis"] == "ok"
    monkeypatch.setenv("TL_HEALTH_MAX_MS", "never")  # read only when the app is built
    assert queue_health.handler({}, None)["redis"] == "ok"  # the same app: settings are not read again
    queue_health.reset()
    with pytest.raises(SettingsError, match="TL_HEALTH_MAX_MS='never': must be a number"):
        queue_health.handler({}, None)  # a bad setting fails the call that builds the app, naming it
    monkeypatch.setenv("TL_HEALTH_MAX_MS", "200")
    assert queue_health.handler({}, None)["redis"] == "ok"  # and the next call, fixed, builds it
    queue_health.reset()


def test_the_kill_switch_closes_every_token_route_of_every_function_but_not_the_open_ones(
    lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, signing_key: SigningKey, stack: Stack,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    setenv(monkeypatch, lambda_env, TL_DISABLE_LAM_ROUTER="1")
    shape_control.reset()
    queue_health.reset()
    admin = signing_key.token(sub="boss", **{"cognito:groups": ["admin"]})
    resize = shape_control.handler(v2_event("POST", "/resize", token=admin, query={"target": "g4dn.xlarge"}), None)
    assert (resize["statusCode"], body_of(resize)["status"]) == (503, "disabled")
    assert stack.node()["InstanceType"] != "g4dn.xlarge"
    health = queue_health.handler(v2_event("GET", "/queue-health"), None)
    assert (health["statusCode"], body_of(health)["redis"]) == (200, "ok")
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(e["route"], e["status"]) for e in logged if e.get("msg") == "request"] == [
        ("POST /resize", 503),
        ("GET /queue-health", 200),
    ]  # one request line each, the same way for both functions
    shape_control.reset()
    queue_health.reset()


def test_a_route_of_another_function_is_not_answered_here(
    lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, signing_key: SigningKey
) -> None:
    setenv(monkeypatch, lambda_env)
    shape_control.reset()
    response = shape_control.handler(v2_event("POST", "/infer", token=signing_key.token(), body="{}"), None)
    assert (response["statusCode"], body_of(response)["message"]) == (404, "no route POST /infer")
    shape_control.reset()
