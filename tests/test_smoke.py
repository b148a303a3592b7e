"""playbooks/smoke.yml against the local stack: the local edge (same routes and JWT rules as the HTTP API), the
moto Cognito for the token, the agent and a model stand-in, and the GUI in headless Chromium; then its fail-fast
path when Redis goes away."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from devstack.ansible import PLAYBOOK, play
from devstack.edge import LocalEdgeServer, UserPool
from devstack.stack import Stack, StandInServer
from jobqueue import contract
from tests.support import PASSWORD

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible is installed by `make deps`"),
]


def smoke(stack: Stack, pool: UserPool, edge: LocalEdgeServer, artifacts: Path) -> object:
    return play(
        stack, "smoke.yml", smoke_api_url=edge.url, smoke_client_id=pool.client_id,
        smoke_cognito_url=stack.moto.url + "/", smoke_username="ann", smoke_password=PASSWORD,
        smoke_artifacts=str(artifacts), smoke_poll_s=1, smoke_timeout_s=30, smoke_unstable_s=20,
    )  # fmt: skip


def test_smoke_passes_and_keeps_the_reply(
    shared_stack: Stack, pool: UserPool, edge: LocalEdgeServer, standin: StandInServer, tmp_path: Path
) -> None:
    shared_stack.start_agent(standin.url)
    out = smoke(shared_stack, pool, edge, tmp_path)
    assert out.returncode == 0, out.stdout[-3000:]  # type: ignore[attr-defined]
    reply = json.loads((tmp_path / "reply.json").read_text())
    assert reply["status"] == "done" and reply["reply"]["output"] and reply["url"]
    log = json.loads((tmp_path / "smoke-log.json").read_text())
    assert log and log[-1]["status"] == "done"
    assert not (tmp_path / "UNSTABLE").exists() and "smoke passed" in out.stdout  # type: ignore[attr-defined]
    # CI-005: the GUI, headless, typed a prompt and its reply was read back from S3 (scripts/gui-smoke)
    gui_reply = json.loads((tmp_path / "gui-reply.json").read_text())
    assert gui_reply["status"] == "done" and gui_reply["reply"]["output"] and gui_reply["url"]
    assert json.loads((tmp_path / "gui-log.json").read_text())[-1]["step"] == "reply read back"
    assert (tmp_path / "gui.png").stat().st_size > 0 and (tmp_path / "gui-console.json").exists()


def test_smoke_fails_fast_on_three_5xx_in_a_row(
    shared_stack: Stack, pool: UserPool, edge: LocalEdgeServer, tmp_path: Path
) -> None:
    for agent in shared_stack.agents:
        agent.stop()  # no agent: the job waits, and Redis goes away under the router once the job is queued
    queued = shared_stack.redis.client()
    before = queued.xlen(contract.QUEUE_STREAM)
    done = threading.Event()

    def stop_redis_once_queued() -> None:
        while not done.wait(0.05):
            if queued.xlen(contract.QUEUE_STREAM) > before:
                shared_stack.redis.stop()
                return

    watcher = threading.Thread(target=stop_redis_once_queued, daemon=True)
    watcher.start()
    try:
        out = smoke(shared_stack, pool, edge, tmp_path)
    finally:
        done.set()
        watcher.join(5)
        if not shared_stack.redis.alive():
            shared_stack.redis.start()
    assert out.returncode != 0  # type: ignore[attr-defined]
    assert "Three 5xx answers in a row from /result (503, 503, 503)" in out.stdout  # type: ignore[attr-defined]
