"""node_agent, checked on the running container: supervisor runs the agent, which serves a real job."""

import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.environ["TL_REPO_ROOT"])
from tests.support import container_check  # the scripts run inside the container (molecule/checks)


def test_supervisor_runs_the_agent_as_the_service_user(host):
    status = host.run("supervisorctl status tl-node-agent").stdout
    assert "RUNNING" in status
    agent = host.process.get(comm="tl-node-agent")
    assert agent.user == "tinyllama"


def test_the_environment_is_readable_by_the_agent_only(host):
    env = host.file("/etc/tinyllama/agent.env")
    assert env.mode == 0o640 and env.group == "tinyllama"
    assert "TL_REPLY_BUCKET=tl-replies" in env.content_string


def test_the_agent_claims_a_job_and_writes_its_reply_to_s3(host):
    job_id = str(uuid.uuid4())
    job = {
        "v": 1,
        "id": job_id,
        "prompt": "hello",
        "idle_minutes": 5,
        "reply_key": f"replies/{job_id}.json",
        "created_at": time.time(),
        "owner": "molecule",
    }
    script = "/opt/tinyllama/venv/lib/python3.11/site-packages/jobqueue/lua/enqueue.lua"
    enqueued = host.run(
        "redis-cli --eval %s job:%s tl:queue owner:%s , %s 300 1000 86400", script, job_id, job_id, json.dumps(job)
    )
    assert enqueued.rc == 0 and "-" in enqueued.stdout, enqueued.stdout + enqueued.stderr
    read = host.run("/opt/moto/bin/python -c %s %s 20", container_check("wait_reply"), job_id)
    assert read.rc == 0, read.stderr
    reply = json.loads(read.stdout)
    assert reply["id"] == job_id and reply["status"] == "done" and reply["output"]


def test_the_log_is_json_lines_with_rotation(host):
    log = host.file("/var/log/tinyllama/agent.log")
    assert '"msg": "agent ready"' in log.content_string
    conf = host.file("/etc/supervisor/conf.d/tl-node-agent.conf").content_string
    assert "stdout_logfile_maxbytes=50MB" in conf and "autorestart=true" in conf
