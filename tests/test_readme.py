"""The README's hand-debugging commands work as written, against a real redis-server."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import redis

from devstack.servers import RedisServer
from jobqueue import contract

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def readme_block(heading: str) -> str:
    text = (REPO / "README.md").read_text()
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
