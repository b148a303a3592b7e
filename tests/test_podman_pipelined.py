"""The local node's and Molecule's connection (devstack/ansible_plugins/podman_pipelined.py): a module goes to the
container on the stdin of one ``podman exec -i``. Checked here against a podman that records its command lines and
runs what it is asked to on this machine, forwarding stdin only with ``-i`` as podman does; every Molecule scenario
and the end-to-end test run the plugin against real containers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.ansible import ansible_env
from devstack.procs import REPO, VENV_BIN

pytestmark = pytest.mark.skipif(not (VENV_BIN / "ansible").exists(), reason="ansible is installed by `make deps`")

RECORDING_PODMAN = """\
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["TL_PODMAN_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[0] == "mount":  # as for a rootless container: no mount point, files go by `podman cp`
    sys.exit(125)
if args[0] == "cp":
    sys.exit(subprocess.run(["cp", args[-2], args[-1].split(":", 1)[1]]).returncode)
if args[0] != "exec":
    sys.exit(2)
rest, interactive = args[1:], False
while rest[0].startswith("-"):
    flag = rest.pop(0)
    interactive = interactive or flag == "-i"
    if flag == "--user":
        rest.pop(0)
rest.pop(0)  # the container
sys.exit(subprocess.run(rest, stdin=None if interactive else subprocess.DEVNULL).returncode)
"""


def run(tmp_path: Path, connection: str, module: str, args: str) -> tuple[str, list[list[str]]]:
    podman = tmp_path / "podman"
    podman.write_text(f"#!{sys.executable}\n{RECORDING_PODMAN}")
    podman.chmod(0o755)
    log = tmp_path / "podman.log"
    log.unlink(missing_ok=True)
    out = subprocess.run(
        [str(VENV_BIN / "ansible"), "all", "-i", "tl-fake,", "-c", connection, "-m", module, "-a", args,
         "-e", f"ansible_podman_executable={podman}", "-e", f"ansible_python_interpreter={sys.executable}"],
        cwd=REPO, env={**ansible_env(None), "TL_PODMAN_LOG": str(log)}, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout, [json.loads(line) for line in log.read_text().splitlines()]


def test_a_module_is_one_podman_exec_with_stdin(tmp_path: Path) -> None:
    stdout, calls = run(tmp_path, "podman_pipelined", "ansible.builtin.command", "echo from-the-module")
    assert "from-the-module" in stdout
    execs = [call for call in calls if call[0] == "exec"]
    assert len(execs) == 1 and execs[0][:3] == ["exec", "-i", "tl-fake"], calls
    assert not [call for call in calls if call[0] == "cp"], calls  # nothing copied into the container


def test_the_collections_own_plugin_takes_a_temporary_directory_and_four_more_calls(tmp_path: Path) -> None:
    """What the plugin saves, and why it exists: without pipelining a module is a home lookup, a temporary
    directory, a copy, a chmod, the run and a clean-up."""
    stdout, calls = run(tmp_path, "containers.podman.podman", "ansible.builtin.command", "echo from-the-module")
    assert "from-the-module" in stdout
    assert len([call for call in calls if call[0] == "exec"]) >= 4
    assert [call[0] for call in calls if call[0] == "cp"] == ["cp"], calls


def test_a_raw_command_without_stdin_still_runs(tmp_path: Path) -> None:
    stdout, calls = run(tmp_path, "podman_pipelined", "ansible.builtin.raw", "echo raw-command")
    assert "raw-command" in stdout
    assert [call[:2] for call in calls if call[0] == "exec"] == [["exec", "tl-fake"]], calls
