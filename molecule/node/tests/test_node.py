"""The whole node, converged by playbooks/node.yml in one container, checked on its running state: the real
model answers through nginx's TLS and its public door (a Cognito id token checked by tl-door for each request),
the agent serves a queued job with it, the watchdog and the skips are in place, and nothing but 443 is open."""

import json
import os
import sys
import time
import uuid

import pytest

sys.path.insert(0, os.environ["TL_REPO_ROOT"])
from tests.support import ATTACKS, SigningKey, container_check  # the repository's corpus, run from the scenario

SITE_PACKAGES = "/opt/tinyllama/venv/lib/python3.11/site-packages"
COMPLETION = json.dumps({"model": "tinyllama", "prompt": "Paris is the capital of", "max_tokens": 8})


def call(host, *, method="POST", path="/v1/completions", auth="-", body=COMPLETION, version="-"):
    out = host.run("python3 -c %s %s %s %s %s %s", container_check("https_client"), method, path, auth, body, version)
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def key(host):
    """The pool's signing key: its JWKS put where the converge pointed tl-door (the local AWS's S3)."""
    signing = SigningKey(f"molecule-{uuid.uuid4().hex[:8]}")  # a new kid: a door that read other keys reads again
    jwks = json.dumps({"keys": [signing.jwk()]})
    put = host.run("/opt/moto/bin/python -c %s tl-replies config/jwks.json %s", container_check("s3_put"), jwks)
    assert put.rc == 0, put.stderr
    return signing


def bearer(key, **claims):
    return "Bearer " + key.token(**claims)


def test_only_443_faces_the_network(host):
    listening = host.socket.get_listening_sockets()
    public = sorted(s for s in listening if s.startswith("tcp://") and not s.startswith(("tcp://127.", "tcp://::1")))
    assert public in (["tcp://0.0.0.0:443"], ["tcp://0.0.0.0:443", "tcp://:::443"]), public
    assert "tcp://127.0.0.1:8000" in listening
    assert not host.socket("tcp://0.0.0.0:22").is_listening


def test_services(host):
    assert host.service("nginx").is_running
    status = host.run("supervisorctl status").stdout
    assert "tl-node-agent" in status and status.count("RUNNING") == 1, status
    assert host.service("tl-watchdog.timer").is_running
    assert host.process.get(comm="llama-server").user == "tinyllama"


def test_the_image_has_both_shapes_and_this_boot_is_the_builder(host):
    """One image: both shapes' servers are units, neither started by systemd itself; tl-shape chose the builder
    (told t3.small: Molecule has no IMDS) and started its llama-server; the agent runs with that shape."""
    table = json.loads(host.file("/etc/tinyllama/shapes.json").content_string)
    assert table["families"]["g4dn"] == "gpu" and table["families"]["t3"] == "builder"
    assert table["shapes"]["gpu"] == {
        "gpu": True,
        "units": ["tl-inference-gpu"],
        "env": {"TL_BACKEND_START_TIMEOUT_S": "900", "TL_MAX_CONCURRENCY": "16"},
    }
    assert host.service("tl-shape").is_enabled
    for unit in ("tl-inference-builder", "tl-inference-gpu"):
        assert host.file(f"/etc/systemd/system/{unit}.service").exists
        assert not host.service(unit).is_enabled, unit
    assert host.service("tl-inference-builder").is_running
    assert not host.service("tl-inference-gpu").is_running
    env = host.file("/run/tinyllama/shape.env").content_string
    assert "TL_SHAPE=builder\n" in env and "TL_INSTANCE_TYPE=t3.small\n" in env, env
    argv = host.run("systemctl show --property=ExecStart --value tl-inference-gpu").stdout
    assert "vllm serve" in argv and "--dtype half" in argv, argv


def test_a_real_completion_through_the_door_with_a_valid_id_token(host, key):
    reply = call(host, auth=bearer(key))
    assert reply["status"] == 200, reply
    assert reply["hsts"].startswith("max-age=")
    assert reply["body"]["choices"][0]["text"].strip() and reply["body"]["usage"]["completion_tokens"] > 0


def test_a_valid_token_gets_a_streamed_completion(host, key):
    body = json.dumps({"model": "tinyllama", "prompt": "Once upon a time", "max_tokens": 12, "stream": True})
    reply = call(host, auth=bearer(key), body=body)
    assert reply["status"] == 200 and reply["events"] >= 2, reply
    assert '"text"' in reply["first_text"], reply


def test_no_token_is_401_and_the_model_server_is_not_reached(host, key):
    del key  # the keys are in place: the refusal is the door's, not a missing JWKS
    reply = call(host)
    assert reply["status"] == 401, reply
    assert reply["www"].startswith("Bearer"), reply


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_each_token_of_the_attack_corpus_is_refused(host, key, attack):
    token = ATTACKS[attack](key, SigningKey(key.kid))
    reply = call(host, auth="Bearer " + token)
    # the 9,000-byte token is over nginx's header buffers (4 x 8k): nginx itself answers 400 before any check
    assert reply["status"] in ((400, 401, 403) if attack == "huge" else (401, 403)), (attack, reply)


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_1_0_and_1_1_are_refused_at_the_door(host, key, version):
    reply = call(host, auth=bearer(key), version=version)
    assert reply["status"] == 0 and reply["error"], reply


def test_a_flood_on_one_token_is_limited_with_429(host, key):
    out = host.run("python3 -c %s %s", container_check("flood"), bearer(key, sub="flooder"))
    assert out.rc == 0, out.stderr
    assert json.loads(out.stdout) == [200, 429], out.stdout  # the burst served, the rest limited


def test_the_agent_serves_a_queued_job_with_the_real_model(host):
    job_id = str(uuid.uuid4())
    job = {"v": 1, "id": job_id, "prompt": "Once upon a time", "max_tokens": 12, "idle_minutes": 5,
           "reply_key": f"replies/{job_id}.json", "created_at": time.time(), "owner": "molecule"}  # fmt: skip
    enqueued = host.run(
        "redis-cli --eval %s job:%s tl:queue owner:%s , %s 300 1000 86400",
        f"{SITE_PACKAGES}/jobqueue/lua/enqueue.lua", job_id, job_id, json.dumps(job),
    )  # fmt: skip
    assert enqueued.rc == 0, enqueued.stderr
    read = host.run("/opt/moto/bin/python -c %s %s 60", container_check("wait_reply"), job_id)
    assert read.rc == 0, read.stderr
    reply = json.loads(read.stdout)
    assert reply["id"] == job_id and reply["status"] == "done", reply
    assert reply["output"].strip() and reply["usage"]["completion_tokens"] > 0


def test_the_gpu_role_skipped_with_its_reason(host):
    fact = json.loads(host.file("/etc/ansible/facts.d/nvidia.fact").content_string)
    assert fact["gpu_count"] == 0 and fact["skipped_reason"]
