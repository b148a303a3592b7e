"""``make lambda-package``: reproducible zips, the size limits, and each zip importable on its own."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lambdas import package

pytestmark = pytest.mark.slow

# What the Lambda Python runtime brings besides the standard library: boto3 and what it needs.
RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("build")
    wheels = package.fetch_wheels(package.default_wheels())
    return {name: package.build(name, out, wheels) for name in package.FUNCTIONS}


def test_building_twice_gives_the_same_bytes(built: dict[str, Path], tmp_path: Path) -> None:
    wheels = package.fetch_wheels(package.default_wheels())
    for name, first in built.items():
        second = package.build(name, tmp_path, wheels)
        assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest(), name


def test_entries_are_sorted_dated_1980_and_not_executable(built: dict[str, Path]) -> None:
    with zipfile.ZipFile(built["router"]) as archive:
        infos = archive.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert {"lambdas/router/handler.py", "jobqueue/lua/enqueue.lua", "jobqueue/lua/throttle.lua", "jwt/api_jws.py",
            "rsa/pkcs1.py", "redis/client.py"} <= set(names)  # fmt: skip
    assert not [n for n in names if n.startswith(("boto3/", "botocore/", "cryptography/"))]


def test_the_router_zip_stays_under_one_megabyte(built: dict[str, Path]) -> None:
    assert built["router"].stat().st_size <= package.ROUTER_BUDGET_BYTES
    for path in built.values():
        assert path.stat().st_size <= package.HARD_LIMIT_BYTES


@pytest.mark.parametrize("function", sorted(package.FUNCTIONS))
def test_each_zip_imports_its_handler_with_only_the_lambda_runtime_beside_it(
    built: dict[str, Path], tmp_path: Path, function: str
) -> None:
    code = tmp_path / "task"
    with zipfile.ZipFile(built[function]) as archive:
        archive.extractall(code)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    for module in RUNTIME_MODULES:
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (runtime / source.name).symlink_to(source)
    check = f"import lambdas.{function}.handler as h; assert callable(h.handler); print('ok')"
    done = subprocess.run(
        [sys.executable, "-S", "-c", check],  # -S: no site-packages, so nothing from this venv leaks in
        env={"PYTHONPATH": f"{code}:{runtime}", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,  # not the repository: only the zip's own files may be found
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_a_wheel_with_the_wrong_hash_is_refused(tmp_path: Path) -> None:
    wheels = package.fetch_wheels(package.default_wheels())
    fake = tmp_path / wheels["rsa"].name
    fake.write_bytes(wheels["rsa"].read_bytes() + b"tampered")
    for name, path in wheels.items():
        if name != "rsa":
            (tmp_path / path.name).symlink_to(path)
    with pytest.raises(package.PackageError, match="does not match the hash"):
        package.fetch_wheels(tmp_path)


def test_an_unknown_function_is_named(tmp_path: Path) -> None:
    with pytest.raises(package.PackageError, match="unknown function 'routr'"):
        package.build("routr", tmp_path, {})
