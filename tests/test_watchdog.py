"""The watchdog (dead-man switch): its decision, and a stop of a real (moto) instance when the agent is gone."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from devstack.procs import clean_env, role_default, venv_tool
from devstack.stack import Stack
from node_agent.watchdog import STALE_S, decide

IID = "i-0123456789abcdef0"


def test_the_roles_stale_limit_is_the_watchdogs_own_default() -> None:
    assert role_default("watchdog", "watchdog_stale_s") == STALE_S == 300  # EC2-503's five minutes


def test_a_fresh_heartbeat_is_ok_and_clears_the_stale_clock() -> None:
    v = decide(1000, {"instance_id": IID, "at": 990}, instance_id=IID, stale_since=500, uptime_s=9999, limit_s=600)
    assert (v.action, v.stale_since) == ("ok", None)


def test_a_missing_heartbeat_starts_the_clock_then_stops_after_the_limit() -> None:
    first = decide(1000, None, instance_id=IID, stale_since=None, uptime_s=9999, limit_s=600)
    assert (first.action, first.stale_since) == ("wait", 1000)
    later = decide(1599, None, instance_id=IID, stale_since=first.stale_since, uptime_s=9999, limit_s=600)
    assert later.action == "wait"
    last = decide(1600, None, instance_id=IID, stale_since=first.stale_since, uptime_s=9999, limit_s=600)
    assert last.action == "stop" and "no heartbeat" in last.reason


def test_an_old_heartbeat_or_another_instances_counts_as_missing() -> None:
    old = decide(5000, {"instance_id": IID, "at": 1000}, instance_id=IID, stale_since=1000, uptime_s=9999, limit_s=600)
    assert old.action == "stop" and "old" in old.reason
    other = decide(5000, {"instance_id": "i-other", "at": 5000}, instance_id=IID, stale_since=1000, uptime_s=9999,
                   limit_s=600)  # fmt: skip
    assert other.action == "stop" and "i-other" in other.reason


def test_a_node_that_just_booted_is_given_the_limit_first() -> None:
    v = decide(5000, None, instance_id=IID, stale_since=1000, uptime_s=120, limit_s=600)
    assert v.action == "wait"


def run_watchdog(stack: Stack, state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = clean_env()
    full = {**base, **stack.moto.aws_env(), "TL_REDIS_URL": stack.redis.url, "TL_INSTANCE_ID": stack.instance_id,
            "TL_WATCHDOG_STATE": str(state), **env}  # fmt: skip
    return subprocess.run([venv_tool("tl-watchdog")], env=full, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.slow
def test_the_watchdog_stops_the_instance_when_the_agent_is_gone(stack: Stack, tmp_path: Path) -> None:
    state = tmp_path / "watchdog.json"
    stack.beat(ttl_s=3600)
    # the first two runs get a limit no slow start of the watchdog's process can use up; the stale clock they leave
    # in the state file is what the later runs, with a 2 s limit, stop on
    fine = run_watchdog(stack, state, TL_WATCHDOG_STALE_S="60")
    assert fine.returncode == 0 and stack.node_state() == "running"
    stack.redis.stop()  # Redis gone: the heartbeat cannot be read, which counts as stale
    first = run_watchdog(stack, state, TL_WATCHDOG_STALE_S="60")
    assert first.returncode == 0 and stack.node_state() == "running", first.stdout + first.stderr
    assert json.loads(state.read_text())["stale_since"] is not None
    time.sleep(2.1)
    dry = run_watchdog(stack, state, TL_WATCHDOG_STALE_S="2", TL_STOP_MODE="dry-run")
    assert "would stop" in dry.stdout and stack.node_state() == "running"
    done = run_watchdog(stack, state, TL_WATCHDOG_STALE_S="2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "StopInstances called" in done.stdout
    assert stack.node_state() in ("stopping", "stopped")


def test_bad_settings_stop_the_watchdog_naming_each_and_stopping_nothing(tmp_path: Path) -> None:
    env = {**clean_env(), "TL_WATCHDOG_STALE_S": "soon", "TL_STOP_MODE": "halt", "TL_INSTANCE_ID": IID,
           "TL_WATCHDOG_STATE": str(tmp_path / "state.json")}  # fmt: skip
    done = subprocess.run([venv_tool("tl-watchdog")], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert "TL_WATCHDOG_STALE_S='soon': must be a number" in said
    assert "TL_STOP_MODE='halt': must be one of stop, dry-run" in said
    assert not (tmp_path / "state.json").exists()  # it decided nothing
