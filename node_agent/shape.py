"""``tl-shape``: which shape this boot is, chosen by the node itself from its own facts.

The same image boots as the builder (t3.small: llama-server on the CPU) or as the GPU node (g4dn.xlarge: vLLM on
the T4). At every boot, before the model server and the agent, this reads the instance type from IMDSv2 and the
NVIDIA GPUs on the PCI bus (sysfs, as the ``nvidia`` role's ``nvidia_gpu_facts`` module does: no driver needed),
picks the shape from the table the node was converged with (``/etc/tinyllama/shapes.json``; its one home is the
``shapes`` variable of ``inventory/group_vars/all.yml``), writes that shape's settings where the agent reads them
(``/run/tinyllama/shape.env``: decided again at every boot, so it lives in /run), and starts the shape's units.
Changing shape needs no Ansible, no SSH, no SSM: stop, change the type, start.

A GPU shape on a machine where no NVIDIA GPU shows (a new type, a broken bus) falls back to the CPU shape, which
still answers; an instance type the table does not name is the fallback shape too, or the GPU one where a GPU
shows. Each choice is logged with its reason, and the agent reports the shape it runs as (heartbeat, metrics,
each reply's timings).

The table (JSON)::

    {"families": {"g4dn": "gpu", "t3": "builder"},      # instance family (the type before the dot) → shape
     "fallback": "builder",                               # the CPU shape
     "start": ["systemctl", "start", "--no-block"],       # how a unit is started (supervisorctl on a container)
     "shapes": {"gpu": {"gpu": true, "units": ["tl-inference-vllm"],
                        "env": {"TL_MODEL": "...", "TL_MAX_CONCURRENCY": "16", "TL_BACKEND_START_TIMEOUT_S": "900"}},
                "builder": {...}}}

Variables: TL_SHAPES_FILE, TL_SHAPE_ENV, TL_INSTANCE_TYPE (empty: IMDSv2), TL_SYSFS_PCI (/sys/bus/pci/devices),
AWS_EC2_METADATA_SERVICE_ENDPOINT (botocore's: the IMDS address, a stand-in in tests).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from node_agent import logs
from node_agent.instance import InstanceError, imds_read

log = logging.getLogger("node_agent.shape")

SHAPES_FILE: Final = Path("/etc/tinyllama/shapes.json")
SHAPE_ENV: Final = Path("/run/tinyllama/shape.env")
SYSFS_PCI: Final = Path("/sys/bus/pci/devices")
# Held equal to roles/nvidia/library/nvidia_gpu_facts.py by tests/test_shape.py: the same GPUs, seen the same way.
NVIDIA_VENDOR: Final = "0x10de"
DISPLAY_CLASS: Final = "0x03"  # PCI class 0x03xxxx: display controllers (the T4 reports 0x0302, 3D)
UNKNOWN_TYPE: Final = "unknown"
SHAPE_SETTINGS: Final = ("TL_MODEL", "TL_MAX_CONCURRENCY", "TL_BACKEND_START_TIMEOUT_S")
"""What a shape may set for the agent; anything else in a shape's env is a mistake in the table."""


class ShapeError(ValueError):
    """The shapes table is missing or wrong; the message says where."""


@dataclass(frozen=True)
class Shape:
    name: str
    gpu: bool
    units: tuple[str, ...]
    env: dict[str, str]


@dataclass(frozen=True)
class Shapes:
    families: dict[str, str]
    shapes: dict[str, Shape]
    fallback: str
    start: tuple[str, ...]

    @classmethod
    def parse(cls, data: Any, where: str = "the shapes table") -> Shapes:
        """Check the whole table; every problem is a ShapeError naming the field."""
        if not isinstance(data, dict):
            raise ShapeError(f"{where}: must be a JSON object")
        try:
            families, raw_shapes, fallback, start = data["families"], data["shapes"], data["fallback"], data["start"]
        except KeyError as exc:
            raise ShapeError(f"{where}: {exc.args[0]} is missing") from None
        if not isinstance(raw_shapes, dict) or not raw_shapes:
            raise ShapeError(f"{where}: shapes must be a non-empty object")
        shapes = {}
        for name, spec in raw_shapes.items():
            field = f"{where}: shapes.{name}"
            if not isinstance(spec, dict) or not isinstance(spec.get("units"), list) or not spec["units"]:
                raise ShapeError(f"{field}.units must be a non-empty list of unit names")
            env = spec.get("env", {})
            if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
                raise ShapeError(f"{field}.env must map names to strings")
            unknown = sorted(set(env) - set(SHAPE_SETTINGS))
            if unknown:
                raise ShapeError(
                    f"{field}.env: {', '.join(unknown)} is not a shape setting ({', '.join(SHAPE_SETTINGS)})"
                )
            shapes[name] = Shape(name, bool(spec.get("gpu", False)), tuple(map(str, spec["units"])), dict(env))
        if not isinstance(families, dict):
            raise ShapeError(f"{where}: families must map instance families to shapes")
        for family, name in families.items():
            if name not in shapes:
                raise ShapeError(f"{where}: families.{family} names {name!r}, which is not in shapes")
        if fallback not in shapes or shapes[fallback].gpu:
            raise ShapeError(f"{where}: fallback must name a shape without a GPU")
        if not isinstance(start, list) or not start or not all(isinstance(a, str) for a in start):
            raise ShapeError(f"{where}: start must be a command, as a list of strings")
        return cls(dict(families), shapes, fallback, tuple(start))

    @classmethod
    def load(cls, path: Path) -> Shapes:
        try:
            return cls.parse(json.loads(path.read_text()), str(path))
        except OSError as exc:
            raise ShapeError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            if isinstance(exc, ShapeError):
                raise
            raise ShapeError(f"{path} is not JSON: {exc}") from None

    def choose(self, instance_type: str, gpus: list[str]) -> tuple[Shape, str]:
        """The shape for this boot, and why."""
        family = instance_type.split(".", 1)[0]
        named = self.families.get(family)
        fallback = self.shapes[self.fallback]
        if named is None:
            gpu_shapes = [s for s in self.shapes.values() if s.gpu]
            if gpus and gpu_shapes:
                return gpu_shapes[0], f"{instance_type} is not in the table; {len(gpus)} NVIDIA GPU(s) on the bus"
            return fallback, f"{instance_type} is not in the table; no GPU: the CPU shape"
        shape = self.shapes[named]
        if shape.gpu and not gpus:
            return fallback, f"{instance_type} is {named} but no NVIDIA GPU is on the bus: the CPU shape"
        return shape, f"{instance_type} is {named}" + (f" ({len(gpus)} NVIDIA GPU(s))" if shape.gpu else "")


def find_gpus(sysfs_pci: Path = SYSFS_PCI) -> list[str]:
    """The PCI slots of the NVIDIA display controllers (the nvidia role's facts module reads the same)."""
    try:
        slots = sorted(sysfs_pci.iterdir())
    except OSError:
        return []

    def read(path: Path) -> str:
        try:
            return path.read_text(encoding="ascii").strip()
        except OSError:
            return ""

    return [slot.name for slot in slots
            if read(slot / "vendor") == NVIDIA_VENDOR and read(slot / "class").startswith(DISPLAY_CLASS)]  # fmt: skip


def shape_env(shape: Shape, instance_type: str) -> str:
    """The agent's view of this boot: TL_SHAPE, TL_INSTANCE_TYPE and the shape's settings, one per line."""
    lines = {"TL_SHAPE": shape.name, "TL_INSTANCE_TYPE": instance_type, **shape.env}
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (as ``shape_env`` writes them); a missing file is empty."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


async def instance_type() -> str:
    return (await imds_read(["instance-type"]))["instance-type"]


def main() -> int:
    logs.setup(os.environ.get("TL_LOG_LEVEL", "INFO"))
    try:
        shapes = Shapes.load(Path(os.environ.get("TL_SHAPES_FILE") or SHAPES_FILE))
    except ShapeError as exc:
        log.error("no shape chosen", extra={"error": str(exc)})
        return 2
    try:
        kind = os.environ.get("TL_INSTANCE_TYPE") or asyncio.run(instance_type())
    except InstanceError as exc:
        # a node that cannot ask IMDS still serves: the GPU shape where a GPU shows, else the CPU shape
        log.error("instance type unknown", extra={"error": str(exc)})
        kind = UNKNOWN_TYPE
    gpus = find_gpus(Path(os.environ.get("TL_SYSFS_PCI") or SYSFS_PCI))
    shape, why = shapes.choose(kind, gpus)
    target = Path(os.environ.get("TL_SHAPE_ENV") or SHAPE_ENV)
    write_atomically(target, shape_env(shape, kind))
    log.info("shape chosen", extra={"shape": shape.name, "reason": why, "units": list(shape.units), "gpus": gpus})
    for unit in shape.units:
        # the command and the unit names are the table's, written by the converge (root-owned), not input
        done = subprocess.run(  # noqa: S603
            [*shapes.start, unit], capture_output=True, text=True, check=False, timeout=120
        )
        if done.returncode != 0:
            log.error("unit not started", extra={"unit": unit, "error": (done.stderr or done.stdout).strip()})
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
