"""scripts/ssm-run, CI's way to run tl-build-lambdas on the builder (CI-702): SendCommand, wait, the command's
exit code. Against moto's SSM for the calls (moto answers every command Success at once), and with a scripted
GetCommandInvocation for the waiting: moto cannot make a command fail or take time."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devstack.stack import Stack

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ssm-run"


def script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("ssm_run", str(SCRIPT))
    spec = importlib.util.spec_from_loader("ssm_run", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def run(stack: Stack, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **stack.moto.aws_env()}
    return subprocess.run([sys.executable, str(SCRIPT), *argv], env=env, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip


@pytest.mark.slow
def test_the_command_goes_to_the_running_builder_and_its_status_decides_the_exit(stack: Stack) -> None:
    done = run(stack, "--shape", "builder", "--poll", "0.1", "--", "tl-build-lambdas", "--ref", "abc123")
    assert done.returncode == 0, done.stderr
    assert f"on {stack.instance_id}: tl-build-lambdas --ref abc123" in done.stderr and "Success" in done.stderr
    sent = stack.ssm().list_commands()["Commands"]
    assert [(c["DocumentName"], c["InstanceIds"], c["Parameters"]["commands"]) for c in sent] == [
        ("AWS-RunShellScript", [stack.instance_id], ["tl-build-lambdas --ref abc123"])]  # fmt: skip


@pytest.mark.slow
def test_no_builder_running_or_no_command_is_bad_input(stack: Stack) -> None:
    gpu_only = run(stack, "--shape", "gpu", "--", "true")
    assert gpu_only.returncode == 2 and "no running instance tagged env=tinyllama of the gpu shape" in gpu_only.stderr
    assert run(stack, "--").returncode == 2
    assert run(stack, "--tag", "tinyllama", "--", "true").returncode == 2
    stack.ec2().stop_instances(InstanceIds=[stack.instance_id])
    stopped = run(stack, "--", "true")
    assert stopped.returncode == 2 and "no running instance" in stopped.stderr
    asleep = run(stack, "--skip-if-asleep", "--", "true")  # CI: the node sleeps, so there is no builder to use
    assert asleep.returncode == 0 and "nothing run" in asleep.stderr
    assert run(stack, "--skip-if-asleep", "--tag", "tinyllama", "--", "true").returncode == 2  # still bad input
    assert stack.ssm().list_commands()["Commands"] == []


class ScriptedSsm:
    def __init__(self, *answers: dict[str, Any] | str) -> None:
        self.answers = list(answers)
        self.calls = 0

    def get_command_invocation(self, **_: str) -> dict[str, Any]:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, str):
            raise ClientError({"Error": {"Code": answer, "Message": answer}}, "GetCommandInvocation")
        return answer


def test_waiting_outlasts_a_not_yet_delivered_command_and_returns_its_failure() -> None:
    ssm_run = script()
    ssm = ScriptedSsm("InvocationDoesNotExist", {"Status": "Pending"}, {"Status": "InProgress"},
                      {"Status": "Failed", "ResponseCode": 7, "StandardErrorContent": "make: *** Error 7"})  # fmt: skip
    final = ssm_run.wait(ssm, "c-1", "i-1", timeout_s=60, sleep=lambda _: None)
    assert ssm.calls == 4 and final["Status"] == "Failed"
    assert ssm_run.exit_code(final) == 7


def test_a_command_that_never_ends_or_is_cancelled_does_not_pass() -> None:
    ssm_run = script()
    slow = ssm_run.wait(ScriptedSsm({"Status": "InProgress"}), "c-1", "i-1", timeout_s=0, sleep=lambda _: None)
    assert slow["Status"] == "TimedOut" and ssm_run.exit_code(slow) == 3
    assert ssm_run.exit_code({"Status": "Cancelled", "ResponseCode": -1}) == 3
    assert ssm_run.exit_code({"Status": "Success", "ResponseCode": 0}) == 0
    with pytest.raises(ClientError):  # any other refusal is not waited out
        ssm_run.wait(ScriptedSsm("AccessDeniedException"), "c-1", "i-1", timeout_s=60, sleep=lambda _: None)
