"""The queue's Redis in the container, checked against the running server (testinfra over podman://)."""

from __future__ import annotations

import pytest

AGENT = "molecule-agent-password-1"
ROUTER = "molecule-router-password-2"
CA = "/etc/redis-tls/server.crt"


def cli(host, user: str, password: str, *command: str, tls: bool = True):  # type: ignore[no-untyped-def]
    tls_args = f"--tls --cacert {CA} " if tls else ""
    return host.run(f"timeout 5 redis-cli {tls_args}-p 6379 --user {user} --pass {password} --no-auth-warning "
                    + " ".join(command))  # fmt: skip


def test_redis_runs_and_listens_with_tls_on_6379_only(host) -> None:  # type: ignore[no-untyped-def]
    assert host.service("redis-server").is_running
    assert host.service("redis-server").is_enabled
    listeners = host.run("ss -Htlnp").stdout.splitlines()
    redis_ports = sorted({line.split()[3].rsplit(":", 1)[1] for line in listeners if "redis-server" in line})
    assert redis_ports == ["6379"], listeners  # no plaintext port beside the TLS one


def test_a_plaintext_client_gets_no_answer(host) -> None:  # type: ignore[no-untyped-def]
    plain = cli(host, "router", ROUTER, "PING", tls=False)
    assert "PONG" not in plain.stdout


def test_the_router_user_pings_over_tls_and_may_do_nothing_dangerous(host) -> None:  # type: ignore[no-untyped-def]
    assert cli(host, "router", ROUTER, "PING").stdout.strip() == "PONG"
    for command in (
        "FLUSHALL",
        "CONFIG GET '*'",
        "KEYS '*'",
        "SET elsewhere 1",
        "EVAL \"return redis.call('FLUSHALL')\" 0",
    ):
        answer = cli(host, "router", ROUTER, command)
        assert "NOPERM" in answer.stdout + answer.stderr or "can't run" in answer.stdout, (command, answer.stdout)
    # DEBUG is off for everyone (enable-debug-command no), before the ACL is asked
    assert "DEBUG command not allowed" in cli(host, "agent", AGENT, "DEBUG SLEEP 0").stdout


@pytest.mark.parametrize(("user", "password"), [("default", "nothing"), ("router", "wrong-password-123456")])
def test_no_one_else_gets_in(host, user: str, password: str) -> None:  # type: ignore[no-untyped-def]
    answer = cli(host, user, password, "PING")
    assert "PONG" not in answer.stdout
    assert "WRONGPASS" in answer.stdout + answer.stderr


def test_the_agent_user_keeps_a_job_and_the_file_is_append_only(host) -> None:  # type: ignore[no-untyped-def]
    assert cli(host, "agent", AGENT, "SET", "tl:molecule", "1").stdout.strip() == "OK"
    assert "aof_enabled:1" in cli(host, "agent", AGENT, "INFO", "persistence").stdout
    assert host.file("/etc/redis/users.acl").mode == 0o640
    assert host.file("/etc/systemd/system/supervisor.service.d/10-after-redis.conf").contains("After=redis-server")
