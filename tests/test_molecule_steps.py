"""Molecule's create step is the repository's (molecule/create.yml, named in molecule/base.yml): it passes the
platform's settings it knows to podman and refuses any other, so that a setting added to base.yml is never dropped
without a word. Every scenario runs it against real containers; here, its guard."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from devstack.ansible import ansible_env
from devstack.procs import REPO, VENV_BIN

pytestmark = pytest.mark.skipif(not (VENV_BIN / "ansible").exists(), reason="ansible is installed by `make deps`")
CREATE = REPO / "molecule" / "create.yml"


def platforms() -> list[dict[str, object]]:
    return list(yaml.safe_load((REPO / "molecule" / "base.yml").read_text())["platforms"])


def create(platform_list: list[dict[str, object]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The create playbook in check mode (nothing is started), with Molecule's view of the platforms."""
    extra = tmp_path / "molecule.json"
    extra.write_text(json.dumps({"molecule_yml": {"platforms": platform_list}}))
    return subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "--check", str(CREATE), "-e", f"@{extra}",
         "--tags", "guard"],
        env=ansible_env(None), capture_output=True, text=True, timeout=120, check=False, cwd=REPO,
    )  # fmt: skip


def test_base_yml_platforms_use_only_what_create_passes_on() -> None:
    play = yaml.safe_load(CREATE.read_text())[0]
    passes = set(play["vars"]["__create_passes"])
    for platform in platforms():
        assert set(platform) <= passes, set(platform) - passes
        assert platform["pre_build_image"] is True


def test_the_platforms_pass_the_guard(tmp_path: Path) -> None:
    out = create(platforms(), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_setting_create_does_not_pass_on_is_refused_by_name(tmp_path: Path) -> None:
    platform = {**platforms()[0], "published_ports": ["8443:443"]}
    out = create([platform], tmp_path)
    assert out.returncode != 0
    assert "add published_ports to it first" in out.stdout, out.stdout


def test_an_image_to_build_is_refused(tmp_path: Path) -> None:
    platform = {**platforms()[0], "pre_build_image": False}
    out = create([platform], tmp_path)
    assert out.returncode != 0
    assert "starts prebuilt images only" in out.stdout, out.stdout
