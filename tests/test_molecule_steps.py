"""Molecule's create step is the repository's (molecule/create.yml, named in molecule/base.yml): it passes the
platform's settings it knows to podman and refuses any other, so that a setting added to base.yml is never dropped
without a word. Every scenario runs it against real containers; here, its guard."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from devstack.ansible import PLAYBOOK, play
from devstack.procs import REPO

pytestmark = pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible is installed by `make deps`")


def platforms() -> list[dict[str, object]]:
    return list(yaml.safe_load((REPO / "molecule" / "base.yml").read_text())["platforms"])


def guard(platform_list: list[dict[str, object]]) -> subprocess.CompletedProcess[str]:
    """The create playbook's guard alone, in check mode (nothing is started), with Molecule's view of the
    platforms."""
    return play(None, "../molecule/create.yml", options=("--check", "--tags", "guard"), timeout_s=120,
                molecule_yml={"platforms": platform_list})  # fmt: skip


def test_base_yml_platforms_pass_the_guard() -> None:
    out = guard(platforms())
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_setting_create_does_not_pass_on_is_refused_by_name() -> None:
    out = guard([{**platforms()[0], "published_ports": ["8443:443"]}])
    assert out.returncode != 0
    assert "add published_ports to it first" in out.stdout, out.stdout


def test_an_image_to_build_is_refused() -> None:
    out = guard([{**platforms()[0], "pre_build_image": False}])
    assert out.returncode != 0
    assert "starts prebuilt images only" in out.stdout, out.stdout
