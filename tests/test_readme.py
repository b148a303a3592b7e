"""The documented commands work as written (docs/operations.md): the hand-debugging ones against a real
redis-server, the deploy's against the local AWS as far as they can go without a real account."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import redis

from devstack.servers import RedisServer
from devstack.stack import Stack
from jobqueue import contract

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def readme_block(heading: str) -> str:
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split(f"## {heading}", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, f"no sh block under {heading}"
    return match.group(1)


def test_redis_cli_examples_insert_read_and_delete_a_job(redis_server: RedisServer, r: redis.Redis) -> None:
    script = readme_block("Debugging the queue by hand").replace("redis-cli ", f"redis-cli -p {redis_server.port} ")
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script + '\necho "ID=$ID"'], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=60).stdout  # fmt: skip
    job_id = out.strip().splitlines()[-1].removeprefix("ID=")
    # The job went in through the real enqueue script and was valid by the contract...
    printed_job = next(line for line in out.splitlines() if line.startswith("{"))
    assert contract.decode(printed_job)["id"] == job_id
    ttl = int(next(line for line in out.splitlines() if line.strip().isdigit()))
    assert 290 <= ttl <= 300
    # ...and after the delete only its queue entry is left, for the agent to answer with `expired`.
    assert r.get(contract.job_key(job_id)) is None
    ((_, fields),) = r.xrange(contract.QUEUE_STREAM)
    assert fields == {"id": job_id}
    assert json.loads(printed_job)["owner"] == "ops"


# ---------------------------------------------------------------- "Deploy to your AWS account"


def deploy_commands() -> list[str]:
    lines = [line.split("  #", 1)[0].strip() for line in readme_block("Deploy to your AWS account").splitlines()]
    return [line for line in lines if line and not line.startswith("export ")]


def test_every_deploy_command_runs_as_far_as_it_can_without_aws(shared_stack: Stack) -> None:
    """Each command of the section, run against the local AWS as far as it goes without a real account: make
    targets dry-run, playbooks syntax-checked with their inventory (the aws_ec2 plugin asks the local AWS), the
    Cognito call made with its parameters, tl's commands asked for their help. A command this does not know
    fails the test, so the section cannot grow a step nothing runs."""
    env = {**os.environ, **shared_stack.moto.aws_env(), "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}",
           "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".ansible" / "collections")}  # fmt: skip
    ran = []
    for command in deploy_commands():
        for part in (p.strip() for p in command.split("&&")):
            argv = shlex.split(part)
            if argv[0] == "make":
                check = ["make", "-n", *argv[1:]]
            elif argv[0].endswith("ansible-playbook"):
                check = [*argv, "--syntax-check"]
            elif argv[0].endswith("/tl"):
                check = [argv[0], argv[1], "--help"]
            elif argv[:3] == ["aws", "cognito-idp", "admin-create-user"]:
                pool = shared_stack.moto.client("cognito-idp").create_user_pool(PoolName="readme")["UserPool"]["Id"]
                options = dict(zip(argv[3::2], argv[4::2], strict=True))
                assert set(options) == {"--user-pool-id", "--username", "--temporary-password"}
                shared_stack.moto.client("cognito-idp").admin_create_user(
                    UserPoolId=pool, Username=options["--username"], TemporaryPassword="Temporary-Password-1"
                )
                ran.append(argv[:3])
                continue
            else:
                pytest.fail(f"the deploy section has a command this test does not run: {part}")
            out = subprocess.run(check, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
            assert out.returncode == 0, f"{part}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
            ran.append(argv[:2])
    assert len(ran) >= 6
    # the exports the section tells you to copy are those the deploy's last task prints
    printed = (REPO / "playbooks" / "aws.yml").read_text()
    for name in re.findall(r"export (.*?)#", readme_block("Deploy to your AWS account"))[-1].split():
        assert name.split("=")[0] + "=" in printed, name
