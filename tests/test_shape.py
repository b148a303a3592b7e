"""tl-shape: the node picks its shape at boot from its own facts (IMDSv2's instance type, the NVIDIA GPUs on the
PCI bus), writes the shape's settings for the agent and starts the shape's units; the agent reports the shape.

IMDS is a stand-in on loopback (``devstack.imds``); the PCI bus is a sysfs-shaped tree of files, as the kernel
lays it out (``<slot>/vendor``, ``<slot>/class``); starting a unit is a command from the table, here one that
records what it was asked to start."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.imds import ImdsServer
from devstack.procs import REPO, clean_env, free_port, venv_tool
from devstack.stack import Stack, StandInServer
from node_agent import shape
from node_agent.shape import ShapeError, Shapes, find_gpus

T4 = {"vendor": "0x10de", "class": "0x030200", "device": "0x1eb8"}
NVIDIA_AUDIO = {"vendor": "0x10de", "class": "0x040300", "device": "0x10fa"}
INTEL_BRIDGE = {"vendor": "0x8086", "class": "0x060000", "device": "0x1237"}


def table(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "families": {"g4dn": "gpu", "t3": "builder"},
        "fallback": "builder",
        "start": ["systemctl", "start", "--no-block"],
        "shapes": {
            "gpu": {"gpu": True, "units": ["tl-inference-vllm"],
                    "env": {"TL_MODEL": "qwen-7b", "TL_MAX_CONCURRENCY": "16", "TL_BACKEND_START_TIMEOUT_S": "900"}},
            "builder": {"units": ["tl-inference-llama"],
                        "env": {"TL_MODEL": "qwen-0.5b", "TL_MAX_CONCURRENCY": "1",
                                "TL_BACKEND_START_TIMEOUT_S": "300"}},
        },
    }  # fmt: skip
    data.update(changes)
    return data


def pci(root: Path, **devices: dict[str, str]) -> Path:
    for slot, files in devices.items():
        (root / slot).mkdir(parents=True)
        for name, value in files.items():
            (root / slot / name).write_text(value + "\n")
    return root


@pytest.mark.parametrize(
    ("instance_type", "gpus", "expected", "why"),
    [
        ("g4dn.xlarge", ["0000:00:1e.0"], "gpu", "g4dn.xlarge is gpu (1 NVIDIA GPU(s))"),
        ("t3.small", [], "builder", "t3.small is builder"),
        ("g4dn.xlarge", [], "builder", "no NVIDIA GPU is on the bus"),  # the driver or the bus failed: still serve
        ("g6.xlarge", ["0000:00:1e.0"], "gpu", "g6.xlarge is not in the table; 1 NVIDIA GPU(s)"),
        ("m7i.large", [], "builder", "m7i.large is not in the table; no GPU"),
    ],
)
def test_the_shape_follows_the_instance_type_and_the_gpus_on_the_bus(
    instance_type: str, gpus: list[str], expected: str, why: str
) -> None:
    chosen, reason = Shapes.parse(table()).choose(instance_type, gpus)
    assert chosen.name == expected
    assert why in reason


def test_a_new_gpu_family_is_one_line_of_the_table() -> None:
    shapes = Shapes.parse(table(families={"g4dn": "gpu", "g5": "gpu", "t3": "builder"}))
    assert shapes.choose("g5.xlarge", ["0000:00:1e.0"])[1] == "g5.xlarge is gpu (1 NVIDIA GPU(s))"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ({k: v for k, v in table().items() if k != "start"}, "start is missing"),
        (table(families={"g4dn": "gpu-large"}), "families.g4dn names 'gpu-large', which is not in shapes"),
        (table(fallback="gpu"), "fallback must name a shape without a GPU"),
        (table(start="systemctl start"), "start must be a command"),
        (table(shapes={"builder": {"units": []}}), "shapes.builder.units must be a non-empty list"),
        (table(shapes={"builder": {"units": ["u"], "env": {"TL_REDIS_URL": "x"}}}),
         "shapes.builder.env: TL_REDIS_URL is not a shape setting"),
        (table(shapes={"builder": {"units": ["u"], "env": {"TL_MAX_CONCURRENCY": 4}}}),
         "shapes.builder.env must map names to strings"),
    ],
)  # fmt: skip
def test_a_wrong_table_is_refused_naming_the_field(data: Any, message: str) -> None:
    with pytest.raises(ShapeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Shapes.parse(data)


def test_gpus_are_nvidia_display_controllers_on_the_pci_bus(tmp_path: Path) -> None:
    root = pci(tmp_path / "devices", **{"0000:00:1e.0": T4, "0000:00:1e.1": NVIDIA_AUDIO, "0000:00:00.0": INTEL_BRIDGE})
    assert find_gpus(root) == ["0000:00:1e.0"]
    assert find_gpus(tmp_path / "no-such-bus") == []


def constants(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    found = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and isinstance(value.value, str):
            found[target.id] = value.value
    return found


def test_the_gpus_are_seen_as_the_nvidia_roles_facts_module_sees_them() -> None:
    module = constants(REPO / "roles" / "nvidia" / "library" / "nvidia_gpu_facts.py")
    ours = constants(Path(shape.__file__))
    for name in ("NVIDIA_VENDOR", "DISPLAY_CLASS"):
        assert ours[name] == module[name], name


@pytest.fixture
def imds() -> Iterator[ImdsServer]:
    server = ImdsServer(instance_type="g4dn.xlarge").start()
    yield server
    server.stop()


def run_shape(tmp_path: Path, imds: ImdsServer, data: Any, sysfs: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "shapes.json").write_text(json.dumps(data))
    env = clean_env()
    env.update(TL_SHAPES_FILE=str(tmp_path / "shapes.json"), TL_SHAPE_ENV=str(tmp_path / "run" / "shape.env"),
               TL_SYSFS_PCI=str(sysfs), AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url)  # fmt: skip
    return subprocess.run([venv_tool("tl-shape")], env=env, capture_output=True, text=True, timeout=60, check=False)


def recorder(tmp_path: Path) -> list[str]:
    """A start command that writes down each unit it is asked to start."""
    return [sys.executable, "-c", f"import sys; open({str(tmp_path / 'started')!r}, 'a').write(sys.argv[1] + '\\n')"]


def test_booted_as_g4dn_with_a_t4_it_writes_the_gpu_settings_and_starts_vllm(tmp_path: Path, imds: ImdsServer) -> None:
    sysfs = pci(tmp_path / "devices", **{"0000:00:1e.0": T4})
    done = run_shape(tmp_path, imds, table(start=recorder(tmp_path)), sysfs)
    assert done.returncode == 0, done.stdout
    assert (tmp_path / "started").read_text().split() == ["tl-inference-vllm"]
    written = shape.read_env_file(tmp_path / "run" / "shape.env")
    assert written == {"TL_SHAPE": "gpu", "TL_INSTANCE_TYPE": "g4dn.xlarge", "TL_MODEL": "qwen-7b",
                       "TL_MAX_CONCURRENCY": "16", "TL_BACKEND_START_TIMEOUT_S": "900"}  # fmt: skip
    assert "shape chosen" in done.stdout and "g4dn.xlarge is gpu" in done.stdout
    assert imds.tokens_issued >= 1  # IMDSv2: the token first


def test_booted_as_t3_small_it_starts_llama_server(tmp_path: Path, imds: ImdsServer) -> None:
    imds.meta["instance-type"] = "t3.small"
    done = run_shape(tmp_path, imds, table(start=recorder(tmp_path)), pci(tmp_path / "devices"))
    assert done.returncode == 0, done.stdout
    assert (tmp_path / "started").read_text().split() == ["tl-inference-llama"]
    assert shape.read_env_file(tmp_path / "run" / "shape.env")["TL_SHAPE"] == "builder"


def test_a_broken_table_no_metadata_or_a_refused_start_says_why(tmp_path: Path, imds: ImdsServer) -> None:
    bus = pci(tmp_path / "devices")
    broken = run_shape(tmp_path, imds, table(start=recorder(tmp_path), fallback="gpu"), bus)
    assert broken.returncode == 2 and "fallback must name a shape without a GPU" in broken.stdout
    assert not (tmp_path / "started").exists() and not (tmp_path / "run" / "shape.env").exists()

    failing = ["sh", "-c", "echo 'Unit tl-inference-llama.service not found.' >&2; exit 5"]
    imds.meta["instance-type"] = "t3.small"
    refused = run_shape(tmp_path, imds, table(start=failing), bus)
    assert refused.returncode == 1 and "Unit tl-inference-llama.service not found." in refused.stdout

    # no metadata: the node still serves, as the CPU shape, or as the GPU one where a GPU shows; the log says why
    imds.stop()
    lost = run_shape(tmp_path, imds, table(start=recorder(tmp_path)), bus)
    assert lost.returncode == 0 and "cannot read instance-type from IMDSv2" in lost.stdout, lost.stdout
    assert (tmp_path / "started").read_text().split() == ["tl-inference-llama"]
    written = shape.read_env_file(tmp_path / "run" / "shape.env")
    assert (written["TL_SHAPE"], written["TL_INSTANCE_TYPE"]) == ("builder", "unknown")
    (tmp_path / "started").unlink()
    t4 = pci(tmp_path / "with-gpu", **{"0000:00:1e.0": T4})
    lost = run_shape(tmp_path, imds, table(start=recorder(tmp_path)), t4)
    assert lost.returncode == 0 and (tmp_path / "started").read_text().split() == ["tl-inference-vllm"]


@pytest.mark.slow
def test_the_agent_reports_the_shape_it_runs_as(stack: Stack, standin: StandInServer, tmp_path: Path) -> None:
    """The file tl-shape wrote wins over the converged settings (one image, both shapes): heartbeat, metrics and
    each reply's timings name the shape."""
    env_file = tmp_path / "shape.env"
    env_file.write_text("TL_SHAPE=gpu\nTL_INSTANCE_TYPE=g4dn.xlarge\nTL_MAX_CONCURRENCY=3\n")
    port = free_port()
    stack.start_agent(standin.url, TL_SHAPE_ENV=str(env_file), TL_METRICS_PORT=str(port), TL_MAX_CONCURRENCY="8")
    beat = stack.queue().heartbeat() or {}
    assert (beat["shape"], beat["instance_type"], beat["max_concurrency"]) == ("gpu", "g4dn.xlarge", 3)
    assert 'tl_shape{shape="gpu"} 1.0' in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    job = stack.submit("Which shape?")
    assert stack.wait_reply(job["id"], 20)["timings"]["shape"] == "gpu"
