"""playbooks/lambdas.yml (the lambda_deploy role) and playbooks/rollback.yml against the moto server: functions made
from the reproducible zips, a version only when the code or the configuration changed, `prod` moved, five versions
kept, and a rollback."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from devstack.ansible import PLAYBOOK, play
from devstack.stack import Stack
from lambdas.package import FUNCTIONS, build, default_wheels, fetch_wheels

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible is installed by `make deps`"),
]


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build")
    wheels = fetch_wheels(default_wheels())
    for function in FUNCTIONS:
        build(function, out, wheels)
    return out


def roles(stack: Stack) -> dict[str, str]:
    iam = stack.moto.client("iam")
    principal = {"Service": "lambda.amazonaws.com"}
    statement = {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}
    trust = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    return {f: iam.create_role(RoleName=f"tl-{f}", AssumeRolePolicyDocument=trust)["Role"]["Arn"] for f in FUNCTIONS}


ENV = {"TL_REPLY_BUCKET": "tinyllama-data-replies"}


def deploy(stack: Stack, build_dir: Path, arns: dict[str, str], env: dict[str, str] = ENV, **extra: Any) -> Any:
    out = play(stack, "lambdas.yml", lambda_deploy_build_dir=str(build_dir), lambda_deploy_role_arns=arns,
               lambda_deploy_env=env, **extra)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    return out


def state(stack: Stack, function: str) -> tuple[str, list[str]]:
    lam = stack.moto.client("lambda")
    alias = lam.get_alias(FunctionName=f"tl-fif-{function}", Name="prod")["FunctionVersion"]
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=f"tl-fif-{function}")["Versions"]]
    return alias, sorted((v for v in versions if v != "$LATEST"), key=int)


def touch(zip_path: Path, n: int) -> None:
    with zipfile.ZipFile(zip_path, "a") as archive:
        archive.writestr(f"lambdas/router/change_{n}.py", f"CHANGE = {n}\n")


# Five ansible-playbook runs against moto, each a Python start-up and six functions: on the shared 2-core machine,
# beside the rest of `make test`, it ran past the 300 s default (and passed alone in less).
@pytest.mark.timeout(600)
def test_deploy_versions_only_what_changed_keeps_five_and_rolls_back(
    fresh_stack: Stack, zips: Path, tmp_path: Path
) -> None:
    arns = roles(fresh_stack)
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    for z in zips.iterdir():
        (build_dir / z.name).write_bytes(z.read_bytes())

    deploy(fresh_stack, build_dir, arns)
    lam = fresh_stack.moto.client("lambda")
    for function in FUNCTIONS:
        assert state(fresh_stack, function) == ("1", ["1"]), function
    router = lam.get_function_configuration(FunctionName="tl-fif-router")
    assert router["Handler"] == "lambdas.router.handler.handler" and router["TracingConfig"]["Mode"] == "Active"
    assert router["Environment"]["Variables"]["TL_REPLY_BUCKET"] == "tinyllama-data-replies"
    shape = lam.get_function_configuration(FunctionName="tl-fif-shape_control")
    assert shape["Environment"]["Variables"]["TL_RESIZE_MODE"] == "async"

    deploy(fresh_stack, build_dir, arns)  # nothing changed: no new version anywhere
    for function in FUNCTIONS:
        assert state(fresh_stack, function) == ("1", ["1"]), function

    # Two router changes with two versions kept: new code makes 2, then a setting alone makes 3 (a version freezes
    # its environment: without a new one the alias would go on serving the old setting), and version 1 is pruned.
    # (Not further: after a deletion moto numbers the next version len(versions) + 1 and repeats a number, which
    # AWS never does.)
    touch(build_dir / "router.zip", 2)
    deploy(fresh_stack, build_dir, arns, lambda_deploy_only=["router"], lambda_deploy_keep=2)
    deploy(fresh_stack, build_dir, arns, {**ENV, "TL_QUEUE_MODE": "elasticache"}, lambda_deploy_only=["router"],
           lambda_deploy_keep=2)  # fmt: skip
    assert state(fresh_stack, "router") == ("3", ["2", "3"])
    prod = lam.get_function_configuration(FunctionName="tl-fif-router", Qualifier="prod")
    assert prod["Environment"]["Variables"]["TL_QUEUE_MODE"] == "elasticache"
    assert state(fresh_stack, "queue_health") == ("1", ["1"])

    back = play(fresh_stack, "rollback.yml", rollback_functions=["router", "queue_health"])
    assert back.returncode == 0, back.stdout[-3000:]
    assert state(fresh_stack, "router")[0] == "2"
    assert state(fresh_stack, "queue_health")[0] == "1" and "has no version before its current one" in back.stdout


def test_missing_zips_or_roles_fail_clearly(fresh_stack: Stack, tmp_path: Path) -> None:
    no_roles = play(fresh_stack, "lambdas.yml", lambda_deploy_build_dir=str(tmp_path),
                    lambda_deploy_role_arns={"router": "arn:aws:iam::123456789012:role/x"})  # fmt: skip
    assert no_roles.returncode != 0 and "lambda_deploy_role_arns lacks shape_control" in no_roles.stdout
    no_zips = play(fresh_stack, "lambdas.yml", lambda_deploy_build_dir=str(tmp_path),
                   lambda_deploy_role_arns=dict.fromkeys(FUNCTIONS, "arn:aws:iam::123456789012:role/x"))  # fmt: skip
    assert no_zips.returncode != 0 and "run `make lambda-package` first" in no_zips.stdout
    assert not fresh_stack.moto.client("lambda").list_functions()["Functions"]


def test_a_later_deploy_without_settings_uses_the_ones_kept_in_ssm(
    fresh_stack: Stack, zips: Path, tmp_path: Path
) -> None:
    """What the builder's tl-build-lambdas runs (`make lambda-deploy`, no -e): the settings playbooks/aws.yml
    kept in /tl-fif/lambda_deploy, or a clear refusal before anything is touched."""
    refused = play(fresh_stack, "lambdas.yml", lambda_deploy_build_dir=str(zips))
    assert refused.returncode != 0 and "deploy everything once with playbooks/aws.yml" in refused.stdout
    assert fresh_stack.moto.client("lambda").list_functions()["Functions"] == []
    kept = {"role_arns": roles(fresh_stack), "subnet_ids": [], "security_group_ids": [],
            "env": {**ENV, "TL_QUEUE_MODE": "node"}}  # fmt: skip
    fresh_stack.ssm().put_parameter(Name="/tl-fif/lambda_deploy", Value=json.dumps(kept), Type="String")
    out = play(fresh_stack, "lambdas.yml", lambda_deploy_build_dir=str(zips))
    assert out.returncode == 0, out.stdout[-3000:]
    config = fresh_stack.moto.client("lambda").get_function_configuration(FunctionName="tl-fif-router:prod")
    assert config["Role"] == kept["role_arns"]["router"]
    assert config["Environment"]["Variables"]["TL_QUEUE_MODE"] == "node"
