"""The Postman collection (postman/), run by newman against the local edge, as a user's CI would run it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devstack.edge import LocalEdgeServer, UserPool
from devstack.stack import Stack
from tests.support import PASSWORD
from tlcli.tokens import password_login

pytestmark = pytest.mark.slow

COLLECTION = Path(__file__).resolve().parent.parent / "postman" / "tinyllama-shape.postman_collection.json"


def newman() -> str:
    cache = Path(os.environ.get("TL_CACHE_DIR") or Path.home() / ".cache" / "tinyllama-shape")
    found = cache / "node" / "node_modules" / ".bin" / "newman"
    if found.exists():
        return str(found)
    on_path = shutil.which("newman")
    if on_path is None:
        pytest.fail(f"newman is not installed ({found}); `make test` installs it with npm")
    return on_path


def test_the_postman_collection_passes_against_the_local_edge(
    edge: LocalEdgeServer, pool: UserPool, shared_stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", shared_stack.moto.url)
    token = password_login(pool.client_id, "ann", PASSWORD, region="eu-central-1").id_token
    throttle_token = password_login(pool.client_id, "cat", PASSWORD, region="eu-central-1").id_token
    shared_stack.beat(ttl_s=120)
    report = tmp_path / "newman.json"
    done = subprocess.run(
        [newman(), "run", str(COLLECTION), "--env-var", f"baseUrl={edge.url}", "--env-var", f"token={token}",
         "--env-var", f"throttleToken={throttle_token}", "--reporters", "cli,json",
         "--reporter-json-export", str(report), "--color", "off"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    stats = json.loads(report.read_text())["run"]["stats"]
    assert stats["requests"]["total"] == 13 + 5  # thirteen requests and the five burst calls of the throttle case
    assert stats["assertions"]["failed"] == 0
    assert stats["assertions"]["total"] >= 15
