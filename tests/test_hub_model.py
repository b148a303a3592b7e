"""Weights by default: the node's fetch from the Hugging Face Hub (``roles/inference/files/hub_model.py``) with the
real ``huggingface_hub`` client against a stand-in Hub on loopback (``HF_ENDPOINT``) serving the small GGUF the
tests use, and the copy kept in the local AWS's S3: the Hub is read once, S3 after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.hub import COMMIT, HubServer
from devstack.procs import REPO
from devstack.servers import ensure_model
from devstack.stack import Stack

SCRIPT = REPO / "roles" / "inference" / "files" / "hub_model.py"
REPO_ID = "tl-test/tiny-instruct-GGUF"
FILE = "tiny-instruct-q4_k_m.gguf"

pytestmark = pytest.mark.slow


def fetch(stack: Stack, hub: HubServer, dest: Path, home: Path, *, sha256: str, token: str = "",
          repo: str = REPO_ID, file: str = FILE) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("HF_", "AWS_"))}, **stack.moto.aws_env(),
           "HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip
    if token:
        env["HF_TOKEN"] = token
    argv = [sys.executable, str(SCRIPT), "--repo", repo, "--revision", "main", "--file", file, "--sha256", sha256,
            "--copy", f"s3://{stack.bucket}/models/", "--dest", str(dest)]  # fmt: skip
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def hub() -> Iterator[HubServer]:
    repos = {REPO_ID: {FILE: ensure_model()}, "tl-test/gated-GGUF": {FILE: ensure_model()}}
    with HubServer(repos, gated={"tl-test/gated-GGUF": "hf_sesame"}) as server:
        yield server


def test_the_hub_is_read_once_then_the_copy_in_s3(fresh_stack: Stack, hub: HubServer, tmp_path: Path) -> None:
    sha = hub.sha256(REPO_ID, FILE)
    first = fetch(fresh_stack, hub, tmp_path / "a" / "tinyllama.gguf", tmp_path / "hf", sha256=sha)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"changed": True, "source": "hub", "commit": COMMIT, "files": 1}
    assert (tmp_path / "a" / "tinyllama.gguf").read_bytes() == ensure_model().read_bytes()
    assert hub.downloads == 1
    s3 = fresh_stack.s3()
    record = json.loads(
        s3.get_object(Bucket=fresh_stack.bucket, Key=f"models/{REPO_ID}/main/tl-hub.json")["Body"].read()
    )
    assert record == {"commit": COMMIT, "sha256": {FILE: sha}}
    # a later converge, a bake, a restore — another node even: from S3, the Hub not asked
    second = fetch(fresh_stack, hub, tmp_path / "b" / "tinyllama.gguf", tmp_path / "hf2", sha256=sha)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["source"] == "s3" and hub.downloads == 1
    again = fetch(fresh_stack, hub, tmp_path / "b" / "tinyllama.gguf", tmp_path / "hf2", sha256=sha)
    assert json.loads(again.stdout)["changed"] is False


def test_a_wrong_sha256_keeps_nothing(fresh_stack: Stack, hub: HubServer, tmp_path: Path) -> None:
    dest = tmp_path / "m" / "tinyllama.gguf"
    out = fetch(fresh_stack, hub, dest, tmp_path / "hf", sha256="0" * 64)
    assert out.returncode == 1
    assert f"not the pinned {'0' * 64}: nothing was kept" in out.stderr
    assert not dest.exists()
    listed = fresh_stack.s3().list_objects_v2(Bucket=fresh_stack.bucket, Prefix="models/")
    assert listed.get("KeyCount", 0) == 0


def test_a_gated_model_needs_the_token(fresh_stack: Stack, hub: HubServer, tmp_path: Path) -> None:
    sha = hub.sha256(REPO_ID, FILE)
    refused = fetch(fresh_stack, hub, tmp_path / "g.gguf", tmp_path / "hf", sha256=sha, repo="tl-test/gated-GGUF")
    assert refused.returncode == 1 and "is gated" in refused.stderr and "HF_TOKEN" in refused.stderr
    allowed = fetch(fresh_stack, hub, tmp_path / "g.gguf", tmp_path / "hf", sha256=sha, repo="tl-test/gated-GGUF",
                    token="hf_sesame")  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.parametrize("case", [("tl-test/nothing", FILE, "no repository tl-test/nothing"),
                                  (REPO_ID, "other.gguf", "has no file 'other.gguf'")])  # fmt: skip
def test_what_the_hub_does_not_have_is_named(
    fresh_stack: Stack, hub: HubServer, tmp_path: Path, case: tuple[str, str, str]
) -> None:
    repo, file, says = case
    out = fetch(fresh_stack, hub, tmp_path / "x.gguf", tmp_path / "hf", sha256="", repo=repo, file=file)
    assert out.returncode == 1 and says in out.stderr, out.stderr


def test_an_unreachable_hub_is_one_line(fresh_stack: Stack, tmp_path: Path) -> None:
    with HubServer({REPO_ID: {FILE: ensure_model()}}) as gone:
        pass  # stopped: nothing listens on its port any more
    out = fetch(fresh_stack, gone, tmp_path / "x.gguf", tmp_path / "hf", sha256="")
    assert out.returncode == 1 and out.stderr.startswith("hub_model: cannot read") and "Traceback" not in out.stderr


def test_a_whole_repository_is_fetched_once_and_then_left_alone(fresh_stack: Stack, tmp_path: Path) -> None:
    """A vLLM model directory: every file, each one's sha256 recorded with the copy; a second converge finds the
    directory as it left it and changes nothing."""
    config = tmp_path / "config.json"
    config.write_text('{"architectures": ["Tiny"]}')
    with HubServer({"tl-test/tiny-AWQ": {"config.json": config, "model.safetensors": ensure_model()}}) as hub:
        dest = tmp_path / "model"
        first = fetch(fresh_stack, hub, dest, tmp_path / "hf", sha256="", repo="tl-test/tiny-AWQ", file="")
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout) == {"changed": True, "source": "hub", "commit": COMMIT, "files": 2}
        assert (dest / "config.json").read_text() == config.read_text()
        again = fetch(fresh_stack, hub, dest, tmp_path / "hf", sha256="", repo="tl-test/tiny-AWQ", file="")
        assert json.loads(again.stdout) == {"changed": False, "source": "s3", "commit": COMMIT, "files": 2}
