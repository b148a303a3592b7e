"""ansible-playbook from the project's venv, with the repository's configuration, against the local stack's AWS."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from devstack.procs import REPO, VENV_BIN

if TYPE_CHECKING:
    from collections.abc import Sequence

    from devstack.stack import Stack

PLAYBOOK: Final = VENV_BIN / "ansible-playbook"
# podman 4.3 on Debian 12 needs runc and raised limits for systemd containers (molecule/containers.conf).
CONTAINERS_CONF: Final = REPO / "molecule" / "containers.conf"


def ansible_env(stack: Stack | None) -> dict[str, str]:
    """The repository's Ansible configuration, talking to the stack's moto server instead of AWS."""
    return {
        **os.environ,
        **(stack.moto.aws_env() if stack is not None else {}),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "CONTAINERS_CONF": str(CONTAINERS_CONF),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".ansible" / "collections"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
        "ANSIBLE_NOCOLOR": "1",
    }


def play(
    stack: Stack | None,
    playbook: str,
    *,
    inventory: str = "localhost,",
    log: Path | None = None,
    timeout_s: float = 300,
    options: Sequence[str] = (),
    **extra: Any,
) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook -i <inventory> <options> playbooks/<playbook> -e <extra as JSON>``; with ``log``, the
    output also goes to that file as it comes (a long converge can be followed with tail -f)."""
    argv = [str(PLAYBOOK), "-i", inventory, *options, f"playbooks/{playbook}", "-e", json.dumps(extra)]
    if log is None:
        return subprocess.run(
            argv, cwd=REPO, env=ansible_env(stack), check=False, capture_output=True, text=True, timeout=timeout_s
        )
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        done = subprocess.run(argv, cwd=REPO, env=ansible_env(stack), check=False, stdout=sink,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout_s)  # fmt: skip
    return subprocess.CompletedProcess(argv, done.returncode, log.read_text(errors="replace"), "")


def recap(out: subprocess.CompletedProcess[str], host: str = "localhost") -> dict[str, int]:
    """The PLAY RECAP counters of one host."""
    line = next(line for line in out.stdout.splitlines() if line.startswith(host) and "ok=" in line)
    return {k: int(v) for k, v in (pair.split("=") for pair in line.split(":", 1)[1].split())}
