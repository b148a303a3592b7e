"""Fixtures that start real servers on free loopback ports (see devstack/) and stop them afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devstack.edge import LocalEdgeServer, UserPool, create_user, create_user_pool, edge_env, function_env
from devstack.servers import LlamaServer, RedisServer
from devstack.stack import Stack, StandInServer
from tests.support import AUDIENCE, ISSUER, PASSWORD, JwksServer, SigningKey

LONGEST_FIRST = ("test_local_node.py", "test_lambda_deploy.py", "test_stack.py")
"""Modules that take minutes, collected first: with ``-n 3`` (``make test``) the end-to-end module and the next two
start at once and the workers share the rest, instead of the longest module starting last."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within each module is kept


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def r(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url, decode_responses=True)


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for a whole module; ``fresh_stack`` and ``stack`` reset it before each test (a new moto server
    and redis-server for every test cost about 6 s each, a quarter of the whole run)."""
    with Stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture
def fresh_stack(shared_stack: Stack) -> Stack:
    shared_stack.reset()
    return shared_stack


@pytest.fixture
def stack(fresh_stack: Stack) -> Iterator[Stack]:
    """A stack as new (reset: agents stopped, Redis empty and running, the local AWS as prepared); the tail of
    each agent's log is printed after the test, where a failure shows it."""
    yield fresh_stack
    for agent in fresh_stack.agents:
        if agent.alive():
            print(f"--- {agent.name} log tail ---\n{agent.tail(40)}")


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandInServer]:
    """Fixed-latency backend: 0.5 s per completion, streamed in 8 chunks."""
    server = StandInServer(tmp_path / "standin", latency_s=0.5)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def slow_standin(tmp_path: Path) -> Iterator[StandInServer]:
    """Fixed-latency backend: 4 s per completion, for jobs that must still be running when the test acts."""
    server = StandInServer(tmp_path / "slow-standin", latency_s=4.0, chunks=16)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def llama(tmp_path: Path) -> Iterator[LlamaServer]:
    """The real model server: llama.cpp's llama-server with the small Gemma 3 GGUF."""
    server = LlamaServer(tmp_path / "llama")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey("test-key-1")


@pytest.fixture
def jwks(signing_key: SigningKey) -> Iterator[JwksServer]:
    server = JwksServer([signing_key]).start()
    yield server
    server.stop()


@pytest.fixture
def lambda_env(stack: Stack, jwks: JwksServer) -> dict[str, str]:
    """The TL_* environment of the functions, pointed at the local stack and the test's signing key."""
    return function_env(stack, jwks_url=jwks.url, issuer=ISSUER, audience=AUDIENCE)


@pytest.fixture(scope="module")
def pool(shared_stack: Stack) -> UserPool:
    shared_stack.reset()
    made = create_user_pool(shared_stack)
    for user in ("ann", "ben", "cat", "dan"):
        create_user(shared_stack, made, user, PASSWORD, admin=user == "dan")
    return made


@pytest.fixture(scope="module")
def edge(shared_stack: Stack, pool: UserPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEdgeServer]:
    server = LocalEdgeServer(tmp_path_factory.mktemp("edge"), edge_env(shared_stack, pool))
    server.start()
    yield server
    server.stop()
