"""The whole node, converged by playbooks/node.yml in one container, checked on its running state: the real
model answers through nginx's TLS, the agent serves a queued job with it, the watchdog and the skips are in
place, and nothing but 443 is open."""

import json
import time
import uuid

SITE_PACKAGES = "/opt/tinyllama/venv/lib/python3.11/site-packages"


def test_only_443_faces_the_network(host):
    listening = host.socket.get_listening_sockets()
    public = sorted(s for s in listening if s.startswith("tcp://") and not s.startswith(("tcp://127.", "tcp://::1")))
    assert public in (["tcp://0.0.0.0:443"], ["tcp://0.0.0.0:443", "tcp://:::443"]), public
    assert "tcp://127.0.0.1:8000" in listening
    assert not host.socket("tcp://0.0.0.0:22").is_listening


def test_services(host):
    assert host.service("nginx").is_running
    status = host.run("supervisorctl status").stdout
    assert "tl-inference" in status and "tl-node-agent" in status, status
    assert status.count("RUNNING") == 2, status
    assert host.service("tl-watchdog.timer").is_running
    assert host.process.get(comm="llama-server").user == "tinyllama"


def test_a_real_completion_through_nginx_tls(host):
    body = json.dumps({"model": "tinyllama", "prompt": "Paris is the capital of", "max_tokens": 8})
    out = host.run(
        "python3 -c %s",
        "import json, ssl, urllib.request as u;"
        "ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE;"
        "ctx.minimum_version = ssl.TLSVersion.TLSv1_2;"
        f"r = u.Request('https://127.0.0.1/v1/completions', {body!r}.encode(), {{'Content-Type': 'application/json'}});"
        "resp = u.urlopen(r, context=ctx, timeout=60);"
        "print(json.dumps({'hsts': resp.headers['Strict-Transport-Security'], 'body': json.load(resp)}))",
    )
    assert out.rc == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["hsts"].startswith("max-age=")
    assert reply["body"]["choices"][0]["text"].strip() and reply["body"]["usage"]["completion_tokens"] > 0


def test_the_agent_serves_a_queued_job_with_the_real_model(host):
    job_id = str(uuid.uuid4())
    job = {"v": 1, "id": job_id, "prompt": "Once upon a time", "max_tokens": 12, "idle_minutes": 5,
           "reply_key": f"replies/{job_id}.json", "created_at": time.time(), "owner": "molecule"}  # fmt: skip
    enqueued = host.run(
        "redis-cli --eval %s job:%s tl:queue owner:%s , %s 300 1000 86400",
        f"{SITE_PACKAGES}/jobqueue/lua/enqueue.lua", job_id, job_id, json.dumps(job),
    )  # fmt: skip
    assert enqueued.rc == 0, enqueued.stderr
    read = (
        "import boto3, time;"
        "s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:5000', region_name='eu-central-1',"
        " aws_access_key_id='t', aws_secret_access_key='t');"
        'exec(\'for _ in range(300):\\n try:\\n  print(s3.get_object(Bucket="tl-replies", Key="replies/%s.json")'
        '["Body"].read().decode()); break\\n except s3.exceptions.NoSuchKey:\\n  time.sleep(0.2)\')'
    ) % job_id
    reply = json.loads(host.run("/opt/moto/bin/python -c %s", read).stdout)
    assert reply["id"] == job_id and reply["status"] == "done", reply
    assert reply["output"].strip() and reply["usage"]["completion_tokens"] > 0


def test_the_gpu_role_skipped_with_its_reason(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/nvidia.fact").content_string)
    assert fact["gpu_count"] == 0 and fact["skipped_reason"]
