"""The Python that ships inside roles: the inference role's S3 model fetch (against the moto server) and the
nvidia role's GPU facts module (run by Ansible itself over a fake sysfs tree, as no GPU is here)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from devstack.stack import BUCKET, Stack

ROOT = Path(__file__).resolve().parent.parent
FETCH = ROOT / "roles" / "inference" / "files" / "fetch_model.py"
FACTS = ROOT / "roles" / "nvidia" / "library" / "nvidia_gpu_facts.py"


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_fetch(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.moto.aws_env()}
    return subprocess.run(
        [sys.executable, str(FETCH), *args], env=env, check=False, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
def test_fetch_a_gguf_object_once_then_only_when_it_changes(fresh_stack: Stack, tmp_path: Path) -> None:
    s3 = fresh_stack.s3()
    s3.put_object(Bucket=BUCKET, Key="models/m.gguf", Body=b"GGUF" + b"\0" * 1000)
    dest = tmp_path / "models" / "tinyllama.gguf"
    first = run_fetch(fresh_stack, f"s3://{BUCKET}/models/m.gguf", str(dest))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"changed": True, "downloaded": 1, "bytes": 1004, "files": 1}
    assert dest.read_bytes().startswith(b"GGUF") and oct(dest.stat().st_mode)[-3:] == "644"
    again = run_fetch(fresh_stack, f"s3://{BUCKET}/models/m.gguf", str(dest))
    assert json.loads(again.stdout)["changed"] is False
    s3.put_object(Bucket=BUCKET, Key="models/m.gguf", Body=b"GGUF" + b"\1" * 1000)  # same size, new ETag
    changed = run_fetch(fresh_stack, f"s3://{BUCKET}/models/m.gguf", str(dest))
    assert json.loads(changed.stdout)["changed"] is True and dest.read_bytes()[4] == 1
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tinyllama.gguf", "tinyllama.gguf.tl-fetch.json"]


@pytest.mark.slow
def test_fetch_a_model_directory_by_prefix(fresh_stack: Stack, tmp_path: Path) -> None:
    s3 = fresh_stack.s3()
    for key in ("config.json", "tokenizer.json", "weights/model-00001.safetensors"):
        s3.put_object(Bucket=BUCKET, Key=f"models/qwen/{key}", Body=key.encode())
    s3.put_object(Bucket=BUCKET, Key="models/qwen-other/config.json", Body=b"not this one")
    dest = tmp_path / "qwen"
    out = run_fetch(fresh_stack, f"s3://{BUCKET}/models/qwen", str(dest))  # no trailing slash: still a prefix
    assert json.loads(out.stdout)["files"] == 3, out.stderr
    assert (dest / "weights" / "model-00001.safetensors").read_text() == "weights/model-00001.safetensors"
    (dest / "tokenizer.json").write_text("damaged")  # a local file of another size is fetched again
    again = run_fetch(fresh_stack, f"s3://{BUCKET}/models/qwen/", str(dest))
    assert json.loads(again.stdout)["downloaded"] == 1 and (dest / "tokenizer.json").read_text() == "tokenizer.json"


@pytest.mark.slow
def test_fetch_errors_are_clear_and_leave_nothing_behind(fresh_stack: Stack, tmp_path: Path) -> None:
    dest = tmp_path / "m.gguf"
    missing = run_fetch(fresh_stack, f"s3://{BUCKET}/models/absent.gguf", str(dest))
    assert missing.returncode != 0 and f"nothing at s3://{BUCKET}/models/absent.gguf" in missing.stderr
    bad = run_fetch(fresh_stack, "https://example.com/m.gguf", str(dest))
    assert bad.returncode != 0 and "not an s3://bucket/key URI" in bad.stderr
    assert list(tmp_path.iterdir()) == []


def fake_pci(root: Path, slot: str, vendor: str, klass: str, device: str) -> None:
    (root / slot).mkdir(parents=True)
    (root / slot / "vendor").write_text(vendor + "\n")
    (root / slot / "class").write_text(klass + "\n")
    (root / slot / "device").write_text(device + "\n")


def test_gpu_detection_counts_nvidia_display_devices_only(tmp_path: Path) -> None:
    facts = load(FACTS)
    pci = tmp_path / "pci"
    fake_pci(pci, "0000:00:1e.0", "0x10de", "0x030200", "0x1eb8")  # a T4, as on g4dn.xlarge
    fake_pci(pci, "0000:00:1f.1", "0x10de", "0x040300", "0x10f0")  # NVIDIA HDMI audio: not a GPU
    fake_pci(pci, "0000:00:03.0", "0x1d0f", "0x020000", "0xec20")  # the ENA network card
    assert facts.find_gpus(str(pci)) == [{"slot": "0000:00:1e.0", "device_id": "0x1eb8", "name": "Tesla T4"}]
    assert facts.find_gpus(str(tmp_path / "absent")) == []
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.172.08  Tue Jul  8 18:24:10 UTC 2025\n")
    assert facts.driver_version(str(version)) == "570.172.08"
    version.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build\n")
    assert facts.driver_version(str(version)) == "580.65.06"
    assert facts.driver_version(str(tmp_path / "none")) is None


@pytest.mark.slow
def test_the_facts_module_runs_under_ansible(tmp_path: Path) -> None:
    ansible = ROOT / ".venv" / "bin" / "ansible"
    if not ansible.exists():
        pytest.skip("ansible is installed by `make deps`")
    pci = tmp_path / "pci"
    fake_pci(pci, "0000:00:1e.0", "0x10de", "0x030200", "0x1eb8")
    out = subprocess.run(
        [str(ansible), "localhost", "-c", "local", "-m", "nvidia_gpu_facts",
         "-a", f"sysfs_pci={pci} driver_version_file={tmp_path}/none", "-o"],
        env={**os.environ, "ANSIBLE_LIBRARY": str(FACTS.parent), "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        check=False, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.split("=>", 1)[1])
    assert result["ansible_facts"]["nvidia"]["gpu_count"] == 1
    assert result["ansible_facts"]["nvidia"]["driver_version"] is None
