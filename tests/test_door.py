"""tl-door, the check behind the node's HTTPS door (nginx auth_request): run as its own process on loopback, as
on the node, against a real JWKS over HTTP; the router's attack corpus gets 403, no token 401 with the header
nginx passes on, a valid id token 204 with the user."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.procs import Process, clean_env, free_port, venv_tool, wait_until
from tests.support import ATTACKS, AUDIENCE, ISSUER, JwksServer, SigningKey

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]  # starts tl-door processes


def door_env(jwks_url: str, port: int) -> dict[str, str]:
    base = clean_env()
    return {**base, "TL_DOOR_PORT": str(port), "TL_JWKS_URL": jwks_url, "TL_JWT_ISSUER": ISSUER,
            "TL_JWT_AUDIENCE": AUDIENCE}  # fmt: skip


@contextlib.contextmanager
def running_door(jwks_url: str, workdir: Path) -> Iterator[str]:
    """tl-door as its own process, reading the keys at ``jwks_url``; yields its URL once it listens."""
    port = free_port()
    process = Process("tl-door", [venv_tool("tl-door")], workdir, door_env(jwks_url, port))
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.check_alive() is None and answers(url), 20, "tl-door to listen")
        yield url
    finally:
        process.stop()


@pytest.fixture
def door(jwks: JwksServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_door(jwks.url, tmp_path_factory.mktemp("door")) as url:
        yield url


def answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/verify", timeout=1)
    except httpx.TransportError:
        return False
    return True


def verify(door: str, authorization: str | None) -> httpx.Response:
    # bytes: a header nginx passes on may hold anything (the corpus has non-ASCII garbage)
    headers = {} if authorization is None else {"Authorization": authorization.encode()}
    return httpx.get(f"{door}/verify", headers=headers, timeout=5)


def test_a_valid_id_token_passes_with_its_user(door: str, signing_key: SigningKey) -> None:
    answer = verify(door, "Bearer " + signing_key.token(sub="user-7"))
    assert answer.status_code == httpx.codes.NO_CONTENT
    assert answer.headers["X-TL-User"] == "user-7"


@pytest.mark.parametrize("header", [None, ""])
def test_no_token_is_401_with_the_header_nginx_passes_on(door: str, header: str | None) -> None:
    answer = verify(door, header)
    assert answer.status_code == httpx.codes.UNAUTHORIZED
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert "X-TL-User" not in answer.headers


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_every_token_of_the_attack_corpus_is_403(door: str, signing_key: SigningKey, attack: str) -> None:
    answer = verify(door, "Bearer " + ATTACKS[attack](signing_key, SigningKey(signing_key.kid)))
    assert answer.status_code == httpx.codes.FORBIDDEN, answer.text
    assert answer.text and "X-TL-User" not in answer.headers


def test_unreadable_keys_are_an_error_never_an_open_door(
    signing_key: SigningKey, tmp_path_factory: pytest.TempPathFactory
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/jwks.json"
    with running_door(nowhere, tmp_path_factory.mktemp("door")) as url:
        answer = verify(url, "Bearer " + signing_key.token())
    assert answer.status_code == httpx.codes.SERVICE_UNAVAILABLE  # nginx: anything but 2xx/401/403 is a 500


def test_only_verify_is_served(door: str) -> None:
    assert httpx.get(f"{door}/", timeout=5).status_code == httpx.codes.NOT_FOUND


def test_missing_settings_are_named_and_nothing_listens() -> None:
    env = clean_env()
    done = subprocess.run([venv_tool("tl-door")], env={**env, "TL_DOOR_PORT": "0"}, capture_output=True,
                          text=True, timeout=30, check=False)  # fmt: skip
    assert done.returncode == 2
    for name in ("TL_JWKS_URL is required", "TL_JWT_ISSUER is required", "TL_JWT_AUDIENCE is required",
                 "TL_DOOR_PORT='0'"):  # fmt: skip
        assert name in done.stderr, done.stderr
