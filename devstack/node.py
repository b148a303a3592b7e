"""The local node: a systemd Debian 12 container under podman, converged with ``playbooks/site.yml`` and
``inventory/local.yml`` as an EC2 node is with the dynamic inventory.

The container stands for the instance: stopping it is the instance stopping, ``podman start`` is the boot, with
systemd, supervisor, llama-server and the agent coming up as they do on EC2. It reaches Redis and the local AWS on
the build machine at its address on the podman bridge, where ``Stack(host=…)`` makes them listen. The queue is
the node's own Redis (the queue_redis role), as with ``aws_stack_queue: node``: the container keeps one address on
the bridge across stop and start, as an instance keeps its private address, and the certificate names it. Nothing
in the container listens beyond it but Redis (TLS only) on 6379: nginx is on loopback, the public door closed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Final

from devstack.ansible import CONTAINERS_CONF, play
from devstack.deploy import Deployment
from devstack.procs import CACHE, REPO, VENV_BIN, StackError, wait_until
from devstack.servers import AWS_REGION, MODEL_FILE
from devstack.stack import Stack

NAME: Final = "tl-node"  # inventory/local.yml
IMAGE: Final = "localhost/tl-debian-systemd:bookworm"  # scripts/build-base-image: what a fresh instance has
BRIDGE: Final = "podman"
HOST_CA: Final = Path("/etc/ssl/certs/ca-certificates.crt")


def containers_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF), **extra}


def podman(*argv: str, check: bool = True, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *argv], env=containers_env(), capture_output=True, text=True, check=False, timeout=timeout_s
    )
    if check and done.returncode != 0:
        raise StackError(f"podman {' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def ensure_image(image: str = IMAGE) -> None:
    """Build the systemd Debian image with debootstrap when it is missing (about a minute and a half, once)."""
    if podman("image", "exists", image, check=False).returncode == 0:
        return
    print(f"building {image} (debootstrap, about a minute and a half, once)", flush=True)
    subprocess.run([str(REPO / "scripts" / "build-base-image"), "--base-only"], env=containers_env(TL_BASE_IMAGE=image),
                   check=True)  # fmt: skip


def _bridge() -> dict[str, str]:
    return dict(json.loads(podman("network", "inspect", BRIDGE).stdout)[0]["subnets"][0])


def bridge_gateway() -> str:
    """The build machine's address on the podman bridge, where the containers reach it."""
    return _bridge()["gateway"]


def node_address() -> str:
    """The local node's fixed address: the bridge's last but one, far from the addresses podman hands out from
    the bottom of the range. Fixed, so that the Redis certificate made at deploy time names it (an instance's
    private address is fixed the same way)."""
    return str(ipaddress.ip_network(_bridge()["subnet"])[-2])


def build_wheel(target: Path) -> Path:
    """The project's wheel (the agent and tl-watchdog), as the node_agent role installs it."""
    subprocess.run([str(VENV_BIN / "pip"), "wheel", "-q", "--no-deps", "-w", str(target), str(REPO)], check=True,
                   timeout=300)  # fmt: skip
    return next(target.glob("tinyllama_shape-*.whl"))


PCI_STANDIN = "/var/lib/tl-pci-standin"


class NodeContainer:
    """``address``: a fixed address on the bridge (empty: whatever podman hands out)."""

    def __init__(self, name: str = NAME, image: str = IMAGE, address: str = "") -> None:
        self.name = name
        self.image = image
        self.fixed_address = address

    def create(self) -> None:
        """A fresh container booted into systemd (an existing one of that name is removed first)."""
        self.remove()
        (CACHE / "container-pip").mkdir(parents=True, exist_ok=True)
        podman(
            "run", "-d", "--name", self.name, "--hostname", self.name, "--systemd", "always", "--privileged",
            "--network", BRIDGE, *(["--ip", self.fixed_address] if self.fixed_address else []),
            # pip in the container trusts what this machine trusts (some build networks re-sign TLS)
            "-v", f"{HOST_CA}:/etc/tl-host-ca.crt:ro", "-e", "PIP_CERT=/etc/tl-host-ca.crt",
            "-v", f"{CACHE / 'container-pip'}:/root/.cache/pip",
            self.image, "/sbin/init",
        )  # fmt: skip
        self.wait_booted()
        # become (sudo) drops PIP_CERT; pip reads this file whoever runs it
        self.sh("printf '[global]\\ncert = /etc/tl-host-ca.crt\\n' > /etc/pip.conf")

    def exec(self, *argv: str, check: bool = True, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *argv, check=check, timeout_s=timeout_s)

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.exec("sh", "-c", script, check=check)

    def running(self) -> bool:
        done = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return done.stdout.strip() == "true"

    def address(self) -> str:
        """The container's address on the bridge, what the network sees of the node."""
        done = podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", self.name)
        return done.stdout.strip()

    def wait_booted(self, timeout_s: float = 90) -> None:
        def booted() -> bool:
            state = self.exec("systemctl", "is-system-running", check=False).stdout.strip()
            return state in ("running", "degraded")

        wait_until(booted, timeout_s, f"systemd in {self.name} to finish booting", interval_s=0.5)

    def boot(self) -> None:
        """``podman start``: systemd comes up and starts what the roles enabled."""
        podman("start", self.name)
        self.wait_booted()

    def shut_down(self) -> None:
        """A clean shutdown (systemd stops supervisor, which drains the agent)."""
        podman("stop", "--time", "60", self.name, timeout_s=90)

    def remove(self) -> None:
        podman("rm", "--force", "--time", "10", self.name, check=False)

    def unit_active(self, unit: str) -> bool:
        return self.exec("systemctl", "is-active", unit, check=False).stdout.strip() == "active"

    def stand_in_gpu(self, present: bool) -> None:
        """An NVIDIA T4 on the container's PCI bus as tl-shape reads it (sysfs ``vendor`` and ``class``), or none:
        a systemd drop-in points tl-shape at a stand-in bus. Takes effect at the next boot."""
        device = f"{PCI_STANDIN}/0000:00:1e.0"  # a T4: NVIDIA's vendor id, a 3D controller
        t4 = f"mkdir {device} && echo 0x10de > {device}/vendor && echo 0x030200 > {device}/class && "
        self.sh(
            f"rm -rf {PCI_STANDIN} && mkdir -p {PCI_STANDIN} /etc/systemd/system/tl-shape.service.d && "
            + (t4 if present else "")
            + f"printf '[Service]\\nEnvironment=TL_SYSFS_PCI={PCI_STANDIN}\\n' "
            "> /etc/systemd/system/tl-shape.service.d/pci-standin.conf"
        )

    def supervised_pid(self, program: str) -> int:
        """The pid of a supervisor program, 0 while it is not running."""
        out = self.exec("supervisorctl", "pid", program, check=False).stdout.strip()
        return int(out) if out.isdigit() else 0

    def wait_supervised(self, program: str, timeout_s: float = 120) -> int:
        wait_until(lambda: self.supervised_pid(program) > 0, timeout_s, f"{program} in {self.name}", interval_s=0.5)
        return self.supervised_pid(program)


def node_settings(stack: Stack, deployment: Deployment, package: Path) -> dict[str, Any]:
    """``local_stack``, the one extra variable inventory/group_vars/local.yml reads: where the node finds the local
    stack. moto listens on the bridge's address (the container's host.containers.internal); the address itself is
    passed, as moto's S3 would read the first label of a host name as a bucket name. The queue's settings are read
    from the local AWS's SSM, where the stack's deploy published them (inventory/group_vars/all.yml)."""
    return {
        "aws_endpoint": stack.moto.url,
        "aws_region": AWS_REGION,
        "reply_bucket": deployment.reply_bucket,
        "instance_id": deployment.instance_id,
        "package": str(package),
        "model": str(MODEL_FILE),
    }


def converge(
    stack: Stack, node: NodeContainer, settings: dict[str, Any], log: Path
) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook -i inventory/local.yml playbooks/site.yml``: every node role, into the container."""
    started = time.monotonic()
    out = play(stack, "site.yml", inventory="inventory/local.yml", log=log, timeout_s=1200, local_stack=settings,
               ansible_host=node.name)  # fmt: skip
    if out.returncode != 0:
        raise StackError(f"site.yml failed after {time.monotonic() - started:.0f} s; see {log}:\n{out.stdout[-4000:]}")
    return out
