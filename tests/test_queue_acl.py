"""The queue's Redis ACL users (``jobqueue/acl.py``) against a real redis-server: each side can do its job through the
contract's own code, and the router's user cannot do anything else."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from devstack.procs import Process, free_port, wait_until
from devstack.stack import Stack
from jobqueue import acl, contract
from jobqueue.queue import AsyncJobQueue, JobQueue
from lambdas.common.redis_client import SecretsError
from lambdas.router.app import Router
from tests.support import SigningKey, setenv, v2_event

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

    async def agent_side() -> list[str]:
        conn = redis.asyncio.Redis(port=acl_redis, username="agent", password=PASSWORDS["agent"])
        try:
            queue = AsyncJobQueue(conn, "node-1")
            await queue.ensure_group()
            await queue.publish_heartbeat({"state": "ready"}, 15)
            entry = (await queue.claim_new(1, 100))[0]
            attempt = await queue.begin(entry, 3)
            await queue.append_partial({entry.job_id: "hi"})
            (refill,) = await queue.finish(entry, "done", 1.0, None, attempt.raw, claim=1)  # and the next job
            await queue.finish(refill, "done", 1.0, None, (await queue.begin(refill, 3)).raw)
            return [entry.job_id, refill.job_id]
        finally:
            await conn.aclose()

    assert router.take_token("u", 5, 20) == 0
    jobs = [contract.new_job("hello", "u"), contract.new_job("again", "u")]
    for job in jobs:
        router.enqueue(job)
    router.request_wake()
    assert asyncio.run(agent_side()) == [job["id"] for job in jobs]
    assert router.heartbeat() == {"state": "ready"}
    progress = router.progress(jobs[-1]["id"])
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


@pytest.fixture
def node_redis(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """Redis as the queue_redis role runs it: TLS only, the contract's ACL users; yields its port and certificate."""
    port = free_port()
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=tinyllama-queue",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    users = tmp_path / "users.acl"
    users.write_text("user default off\n" + "".join(f"user {n} on >{PASSWORDS[n]} {r}\n" for n, r in acl.USERS.items()))
    binary = shutil.which("redis-server") or "redis-server"
    server = Process(f"redis-tls-{port}", [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                     "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                     "--tls-auth-clients", "no", "--save", "", "--aclfile", str(users), "--dir", str(tmp_path)],
                     tmp_path)  # fmt: skip
    server.start()

    def up() -> bool:
        try:
            return bool(redis.Redis(port=port, username="agent", password=PASSWORDS["agent"], ssl=True,
                                    ssl_ca_certs=str(cert), socket_timeout=1).ping())  # fmt: skip
        except redis.RedisError:
            return False

    wait_until(up, 20, "redis-server with TLS")
    yield port, cert.read_text()
    server.stop()


def test_the_router_reaches_the_node_redis_with_its_user_and_pinned_certificate_from_s3(
    node_redis: tuple[int, str], stack: Stack, lambda_env: dict[str, str], signing_key: SigningKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    port, cert = node_redis
    s3 = stack.moto.client("s3")
    secrets = f"s3://{stack.bucket}/config/redis-router.json"
    s3.put_object(Bucket=stack.bucket, Key="config/redis-router.json",
                  Body=json.dumps({"password": PASSWORDS["router"], "tls_cert": cert}))  # fmt: skip
    setenv(monkeypatch, lambda_env, TL_REDIS_URL=f"rediss://127.0.0.1:{port}/0", TL_REDIS_SECRETS=secrets)
    agent = redis.Redis(port=port, username="agent", password=PASSWORDS["agent"], ssl=True, ssl_ca_certs=None,
                        ssl_cert_reqs="none")  # fmt: skip
    agent.set(contract.HEARTBEAT, json.dumps({"state": "ready"}), ex=30)
    router = Router.from_env()
    response = router.handle(v2_event("POST", "/infer", body='{"prompt": "hi"}', token=signing_key.token()))
    assert (response["statusCode"], json.loads(response["body"])["status"]) == (202, "queued")
    assert agent.xlen(contract.QUEUE_STREAM) == 1
    kwargs = router.queue.redis.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["ssl_cert_reqs"]) == ("router", "required")

    s3.put_object(Bucket=stack.bucket, Key="config/redis-router.json", Body=json.dumps({"password": "x"}))
    with pytest.raises(SecretsError, match=r"redis-router\.json is not"):
        Router.from_env()
    s3.delete_object(Bucket=stack.bucket, Key="config/redis-router.json")
    with pytest.raises(SecretsError, match=f"cannot read {secrets}"):
        Router.from_env()
    monkeypatch.setenv("TL_REDIS_SECRETS", "/tl-fif/redis")  # the old SSM prefix: said, not guessed at
    with pytest.raises(SecretsError, match="is not an s3://bucket/key URL"):
        Router.from_env()


def test_a_wrong_certificate_is_refused(node_redis: tuple[int, str], tmp_path: Path) -> None:
    port, _ = node_redis
    other = tmp_path / "other.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(tmp_path / "other.key"), "-out", str(other), "-days", "1", "-subj", "/CN=x"],
                   check=True, capture_output=True)  # fmt: skip
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, username="router", password=PASSWORDS["router"], ssl=True, ssl_ca_certs=str(other),
                    ssl_cert_reqs="required", socket_timeout=2).ping()  # fmt: skip
