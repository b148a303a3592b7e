"""The queue's Redis ACL users (``jobqueue/acl.py``) against a real redis-server: each side can do its job through the
contract's own code, and the router's user cannot do anything else."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from devstack.procs import Process, free_port, wait_until
from jobqueue import acl, contract
from jobqueue.queue import AsyncJobQueue, JobQueue

pytestmark = pytest.mark.slow
PASSWORDS = {"agent": "agent-secret-1", "router": "router-secret-2", "admin": "test-only-admin"}


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    users = tmp_path / "users.acl"
    users.write_text(
        "user default off\n"
        + "".join(f"user {n} on >{PASSWORDS[n]} {rules}\n" for n, rules in acl.USERS.items())
        + f"user admin on >{PASSWORDS['admin']} ~* &* +@all\n"  # the test's own, to ask ACL DRYRUN
    )
    binary = shutil.which("redis-server") or "redis-server"
    server = Process(f"redis-acl-{port}", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                            "--aclfile", str(users), "--dir", str(tmp_path)], tmp_path)  # fmt: skip
    server.start()

    def up() -> bool:
        try:
            return bool(client("agent", port).ping())
        except redis.RedisError:
            return False

    wait_until(up, 20, "redis-server with ACL users")
    yield port
    server.stop()


def client(user: str, port: int) -> redis.Redis:
    return redis.Redis(port=port, username=user, password=PASSWORDS[user], socket_timeout=2)


def test_the_router_and_the_agent_do_their_work_through_the_contract(acl_redis: int) -> None:
    router = JobQueue(client("router", acl_redis))

    async def agent_side() -> str:
        conn = redis.asyncio.Redis(port=acl_redis, username="agent", password=PASSWORDS["agent"])
        try:
            queue = AsyncJobQueue(conn, "node-1")
            await queue.ensure_group()
            await queue.publish_heartbeat({"state": "ready"}, 15)
            entry = (await queue.claim_new(1, 100))[0]
            attempt = await queue.begin(entry, 3)
            await queue.append_partial(entry.job_id, {"text": "hi"})
            await queue.finish(entry, "done", 1.0, None, attempt.raw)
            return entry.job_id
        finally:
            await conn.aclose()

    assert router.take_token("u", 5, 20) == 0
    job = contract.new_job("hello", "u")
    router.enqueue(job)
    router.request_wake()
    assert asyncio.run(agent_side()) == job["id"]
    assert router.heartbeat() == {"state": "ready"}
    progress = router.progress(job["id"])
    assert (progress.owner, progress.result["status"] if progress.result else None) == ("u", "done")  # type: ignore[index]
    assert router.take_wake() is False  # the queue is empty again
    assert client("router", acl_redis).ping()


@pytest.mark.parametrize(
    "command",
    [("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("DEBUG", "SLEEP", "0"), ("SET", "elsewhere", "1"),
     ("SET", contract.HEARTBEAT, json.dumps({"state": "ready"})), ("DEL", contract.result_key("x")),
     ("ACL", "LIST"), ("SHUTDOWN",), ("CLIENT", "KILL", "ID", "1"), ("EVAL", "return redis.call('FLUSHALL')", "0"),
     ("EVAL", "return redis.call('SET', 'elsewhere', '1')", "0"), ("MONITOR",)],
)  # fmt: skip
def test_the_router_user_is_refused_everything_else(acl_redis: int, command: tuple[str, ...]) -> None:
    refused_by_acl(acl_redis, "router", command)


def refused_by_acl(port: int, user: str, command: tuple[str, ...]) -> None:
    """Refused when run, and by the ACL itself (DRYRUN), not only by some other setting (DEBUG is off anyway).
    A script is allowed as such: what it runs is checked, so its refusal must come from inside."""
    with pytest.raises(redis.ResponseError) as refused:
        client(user, port).execute_command(*command)
    if command[0] == "EVAL":
        assert "The user executing the script can't" in str(refused.value)
    else:
        verdict = client("admin", port).execute_command("ACL", "DRYRUN", user, *command)
        assert verdict != b"OK", verdict


@pytest.mark.parametrize("command", [("FLUSHALL",), ("CONFIG", "SET", "appendonly", "no"), ("KEYS", "*"),
                                     ("DEBUG", "SLEEP", "0"), ("SET", "elsewhere", "1")])  # fmt: skip
def test_the_agent_user_is_refused_what_no_agent_needs(acl_redis: int, command: tuple[str, ...]) -> None:
    refused_by_acl(acl_redis, "agent", command)


def test_the_default_user_is_off(acl_redis: int) -> None:
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=acl_redis, socket_timeout=2).ping()
