"""Start, watch and stop the local stack's processes (on free loopback ports, logs in files)."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

import httpx
import yaml

REPO: Final = Path(__file__).resolve().parent.parent
# Built once per machine and shared by every clone: the llama-server wheel and the model (see the Makefile).
CACHE: Final = Path(
    os.environ.get("TL_CACHE_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinyllama-shape"
)
VENV_BIN: Final = Path(sys.executable).parent


class StackError(RuntimeError):
    """A local server did not start; the message points at its log."""


def role_default(role: str, name: str) -> Any:
    """A role's default (roles/<role>/defaults/main.yml), where the local stack needs the same fact."""
    return yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())[name]


def clean_env() -> dict[str, str]:
    """This process's environment without the project's settings (``TL_*``) and AWS's (``AWS_*``): what a child
    process starts from before it is given its own, so that nothing of the caller's configuration leaks in."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("TL_", "AWS_"))}


EPHEMERAL_PORTS: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")


@functools.cache
def _listen_ports() -> tuple[int, ...]:
    """The ports the local servers listen on: outside the kernel's ephemeral range (Linux: 32768-60999). A port the
    kernel picks for a bind to port 0 comes from that range, the one it also gives outgoing connections, so one of
    the tests' many client sockets could take it before the server bound it (a test's redis-server once lost its
    port that way: "Address already in use")."""
    try:
        low, high = (int(n) for n in EPHEMERAL_PORTS.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return tuple(port for port in range(10000, 65536) if not low <= port <= high)


def free_port() -> int:
    """A loopback port nothing is bound to, outside the range outgoing connections take their ports from."""
    ports = _listen_ports()
    for _ in range(200):
        port = random.choice(ports)  # noqa: S311 (a port number, not a secret)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise StackError("no free port outside the ephemeral range")


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    raise StackError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == httpx.codes.OK
    except httpx.HTTPError:
        return False


class Process:
    """One child process with its output in ``<workdir>/<name>.log``."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = workdir
        self.env = dict(os.environ if env is None else env)
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.workdir,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise StackError(f"{self.name} is not running")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise StackError(f"{self.name} exited; see {self.log_path}:\n{self.tail()}")

    def wait_up(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait until ``ready()``; a process that exits meanwhile (its port taken, a bad setting) fails at once,
        with its log, instead of at the timeout."""

        def up() -> bool:
            self.check_alive()
            return ready()

        wait_until(up, timeout_s, what)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.signal(signal.SIGKILL)
        self.wait(10)

    def stop(self, timeout_s: float = 10) -> int | None:
        """SIGTERM, then SIGKILL if it is still there after ``timeout_s``; returns the exit code."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def wait(self, timeout_s: float) -> int | None:
        return None if self.proc is None else self.proc.wait(timeout_s)


def pythonpath() -> str:
    """``PYTHONPATH`` for a process that runs one of this repository's modules (``python -m devstack.…``)."""
    repo = str(Path(__file__).resolve().parent.parent)
    return os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)


def venv_tool(name: str) -> str:
    """A console script installed beside the running interpreter (the project's venv)."""
    path = VENV_BIN / name
    return str(path) if path.exists() else name


class BlackHole:
    """A loopback port that never completes a TCP handshake, as a stopped instance's private address does inside
    a VPC (its ENI stays, nothing answers): the listen backlog is filled and never accepted, so the kernel drops
    every further SYN and a client's connect runs into its timeout."""

    def __init__(self) -> None:
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(0)
        self.port = int(self._server.getsockname()[1])
        self._fill: list[socket.socket] = []
        for _ in range(4):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                client.connect(("127.0.0.1", self.port))
            self._fill.append(client)
        time.sleep(0.05)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        for client in self._fill:
            client.close()
        self._server.close()

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
