"""inference (llama_cpp backend), checked on the running container: a real completion from the small model."""

import json
import os
import sys

sys.path.insert(0, os.environ["TL_REPO_ROOT"])
from tests.support import container_check  # the scripts run inside the container (molecule/checks)

FETCH = container_check("http_get")


def curl(host, path, body=None):
    """GET (or POST a JSON body) inside the container, with the container's own Python (no curl there)."""
    out = host.run("python3 -c %s %s %s", FETCH, path, json.dumps(body) if body is not None else "")
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout)


def test_the_server_runs_under_systemd_as_the_service_user(host):
    assert host.service("tl-inference").is_running
    assert host.service("tl-inference").is_enabled
    assert host.process.get(comm="llama-server").user == "tinyllama"


def test_it_listens_on_loopback_only(host):
    assert host.socket("tcp://127.0.0.1:8000").is_listening
    assert not host.socket("tcp://0.0.0.0:8000").is_listening
    listening = [s for s in host.socket.get_listening_sockets() if s.endswith(":8000")]
    assert listening == ["tcp://127.0.0.1:8000"], listening


def test_health_and_the_served_model_name(host):
    assert curl(host, "/health")["status"] == "ok"
    assert [m["id"] for m in curl(host, "/v1/models")["data"]] == ["tinyllama"]


def test_a_real_completion(host):
    reply = curl(host, "/v1/completions", {"model": "tinyllama", "prompt": "The capital of France is", "max_tokens": 8})
    assert reply["choices"][0]["text"].strip()
    assert reply["usage"]["completion_tokens"] > 0


def test_systemd_restarts_it_after_a_crash(host):
    before = host.process.get(comm="llama-server").pid
    host.run("kill -9 %s", str(before))
    out = host.run(
        "for i in $(seq 60); do python3 -c %s /health '' >/dev/null 2>&1 && pgrep -x llama-server && exit 0;"
        " sleep 0.5; done; exit 1",
        FETCH,
    )
    assert out.rc == 0 and int(out.stdout.split()[-1]) != before
