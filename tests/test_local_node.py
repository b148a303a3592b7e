"""The whole path end to end, as ``make demo`` runs it (``devstack.fullstack``): the AWS stacks and Lambdas deployed
into the local AWS by their playbooks, the node converged with ``playbooks/site.yml`` and ``inventory/local.yml``
in a systemd container, and prompts sent through the HTTP API. Nothing is stood in for: the model is llama-server
with Gemma 3 270M inside the container, under supervisor beside the agent, as on the builder shape; the queue is
the node's own Redis (``aws_stack_queue: node``), reached by the router over TLS as its ACL user."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator

import httpx
import pytest
import redis

from devstack.ansible import PLAYBOOK, play
from devstack.deploy import NOTHING_LEFT, leftovers, teardown
from devstack.edge import id_token
from devstack.fullstack import AGENT, HUB_FILE, HUB_REPO, INFERENCE, FullStack
from devstack.procs import venv_tool, wait_until
from lambdas.package import FUNCTIONS
from tests.support import PASSWORD

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible is installed by `make deps`"),
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is installed by `make deps`"),
    # The module's fixture (the stacks and the Lambdas by their playbooks, then site.yml into the container) counts
    # against its first test: with the Redis secrets the stack deploy makes, it passes 300 s on 2 cores.
    pytest.mark.timeout(900),
]
USER = "e2e-user"


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullStack]:
    with FullStack(tmp_path_factory.mktemp("fullstack"), USER, PASSWORD) as running:
        yield running


def test_site_yml_on_the_local_inventory_says_what_it_misses_before_touching_anything() -> None:
    out = play(None, "site.yml", inventory="inventory/local.yml", ansible_host="tl-no-such-container")
    assert out.returncode != 0
    assert "The local node needs -e local_stack={...} with aws_endpoint, aws_region" in out.stdout, out.stdout
    partial = play(None, "site.yml", inventory="inventory/local.yml", ansible_host="tl-no-such-container",
                   local_stack={"aws_endpoint": "http://x:5000"})  # fmt: skip
    assert partial.returncode != 0 and "The local node needs" in partial.stdout, partial.stdout
    assert "tl-no-such-container" not in out.stdout + partial.stdout  # failed before any connection


def post_infer(whole: FullStack, prompt: str, max_tokens: int) -> str:
    token = id_token(whole.stack, whole.pool, USER, PASSWORD)
    answer = httpx.post(f"{whole.edge.url}/infer", json={"prompt": prompt, "max_tokens": max_tokens},
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    assert answer.status_code == httpx.codes.ACCEPTED, answer.text
    return str(answer.json()["id"])


def test_the_stacks_and_the_lambdas_were_deployed_by_their_playbooks(whole: FullStack) -> None:
    # moto's SigV4 check fails every Lambda call (even the operator's): read with its access control paused
    with whole.stack.moto.iam_paused("moto cannot verify SigV4 on Lambda's REST paths"):
        lam = whole.stack.moto.client("lambda")
        configs = {fn: lam.get_function_configuration(FunctionName=alias)
                   for fn, alias in whole.deployment.functions.items()}  # fmt: skip
    for function, config in configs.items():
        assert config["Handler"] == f"lambdas.{function}.handler.handler"
        assert config["Environment"]["Variables"]["TL_REPLY_BUCKET"] == whole.deployment.reply_bucket
    assert len(whole.deployment.functions) == len(FUNCTIONS)
    # the two in the private subnets may leave them over IPv6 (no NAT gateway), in the version the alias serves
    in_vpc = {fn for fn, config in configs.items() if config.get("VpcConfig", {}).get("SubnetIds")}
    assert in_vpc == {"router", "queue_health"}
    for function in in_vpc:
        assert configs[function]["VpcConfig"]["Ipv6AllowedForDualStack"] is True, function
    node = whole.stack.node()
    assert node["InstanceId"] == whole.deployment.instance_id
    assert {"Key": "env", "Value": "tinyllama"} in node["Tags"]


def test_the_node_took_its_weights_from_the_hub_and_keeps_the_copy_in_the_bucket(whole: FullStack) -> None:
    """As on AWS: the converge read the (stand-in) Hub once, with huggingface_hub, and kept the file and its record
    in the bucket, with the node role's key under enforced IAM; the weights on the node are the Hub's bytes."""
    assert whole.hub.downloads == 1
    prefix = f"models/{HUB_REPO}/main/"
    s3 = whole.stack.s3()
    record = json.loads(s3.get_object(Bucket=whole.deployment.reply_bucket, Key=prefix + "tl-hub.json")["Body"].read())
    assert record["sha256"] == {HUB_FILE: whole.hub.sha256(HUB_REPO, HUB_FILE)}
    on_node = whole.node.exec("sha256sum", "/opt/tinyllama/models/tinyllama.gguf").stdout.split()[0]
    assert on_node == whole.hub.sha256(HUB_REPO, HUB_FILE)


def test_from_the_network_the_node_answers_redis_over_tls_and_nothing_else(whole: FullStack) -> None:
    """The public door closed (aws_stack_public_endpoint off, the default): nginx on loopback only; from the
    network only the queue's Redis answers, and only over TLS."""
    node = whole.node
    assert node.supervised_pid(AGENT) > 0 and node.supervised_pid(INFERENCE) > 0
    address = node.address()
    assert address == node.fixed_address  # the address the Redis certificate names
    for port in (22, 80, 443, 8000, 9108, 9110):  # no SSH, no door; model, metrics and tl-door on loopback only
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=3):
            pass
    # on the node itself nginx serves the model over TLS (what an operator's check over SSM would reach)
    inside = node.exec("python3", "-c", LOOPBACK_COMPLETION, check=False)
    assert inside.returncode == 0 and json.loads(inside.stdout)["choices"][0]["text"].strip(), inside.stdout
    with pytest.raises(redis.ConnectionError):  # Redis: TLS only; a plaintext client gets no answer it can read
        redis.Redis(host=address, port=6379, socket_timeout=3, socket_connect_timeout=3).ping()


LOOPBACK_COMPLETION = (
    "import json, ssl, urllib.request as u; c = ssl.create_default_context(); c.check_hostname = False;"
    "c.verify_mode = ssl.CERT_NONE; body = json.dumps({'model': 'tinyllama', 'prompt': 'Paris is the capital of',"
    " 'max_tokens': 8}).encode(); print(u.urlopen(u.Request('https://127.0.0.1/v1/completions', body,"
    " {'Content-Type': 'application/json'}), context=c, timeout=60).read().decode())"
)


def test_the_router_reaches_the_nodes_redis_as_its_user_and_may_do_only_its_part(whole: FullStack) -> None:
    queue = whole.queue()  # TLS with the pinned certificate (name checked), the router's password from S3
    assert queue.redis.ping()
    assert queue.heartbeat() is not None, "the agent on the node publishes its heartbeat into its own Redis"
    router: redis.Redis = queue.redis
    for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("SET", "not-ours", "1")):
        with pytest.raises(redis.ResponseError, match=r"NOPERM|no permissions"):
            router.execute_command(*command)


def test_tl_cold_boots_the_stopped_node_and_prints_the_models_reply(whole: FullStack) -> None:
    whole.stop_node()
    assert not whole.node.running()
    env = whole.tl_env()
    tl = venv_tool("tl")
    subprocess.run([tl, "login", "--password", "--username", USER], env=env, check=True, capture_output=True,
                   timeout=60)  # fmt: skip
    argv = [tl, "infer", "Name three colours.", "--max-tokens", "24", "--poll", "0.25"]
    run = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    boot = whole.boot_when_started()
    out, _ = run.communicate(timeout=240)
    assert run.returncode == 0, out
    assert "starting the node" in out, out  # the router parked it: the node's Redis did not answer
    assert "done:" in out and "tokens from tinyllama" in out and "first token" in out, out
    # parked in S3 while the node slept, adopted by the agent after the boot, answered once
    assert len(boot.parked) == 1, boot
    (job_id,) = boot.parked
    assert job_id in out
    assert whole.parked() == []
    assert any("parked job adopted" in line and job_id in line for line in whole.node_log("agent.log"))
    assert whole.stack.reply_versions(job_id) == 1


def test_killing_the_agent_inside_the_node_mid_job_still_gives_one_reply(whole: FullStack) -> None:
    if not whole.node.running():
        whole.node.boot()
    node = whole.node
    before = node.wait_supervised(AGENT)
    job_id = post_infer(whole, "Write a long story about a lighthouse keeper.", 400)
    queue = whole.queue()

    def claimed() -> bool:
        progress = queue.progress(job_id)
        return progress.started and progress.result is None

    wait_until(claimed, 120, "the agent to claim the job", interval_s=0.1)
    node.exec("kill", "-9", str(before))  # the agent dies mid-job, as on an OOM kill
    assert whole.stack.reply(job_id) is None
    wait_until(lambda: node.supervised_pid(AGENT) not in (0, before), 60, "supervisor to restart the agent")
    reply = whole.stack.wait_reply(job_id, 240)
    assert reply["status"] == "done", reply
    assert reply["attempts"] == 2
    assert reply["output"].strip()
    assert whole.stack.reply_versions(job_id) == 1


def test_teardown_after_the_whole_path_leaves_nothing_of_it(whole: FullStack) -> None:
    """Last, as it removes what the others use: the documented teardown, run as the operator under enforced IAM
    after a deploy from an empty account, a converge and replies, finds nothing of the project left — the weights'
    copy, the replies and the Redis secrets included."""
    before = leftovers(whole.stack, strict=True)
    assert whole.deployment.reply_bucket in before["buckets"] and before["instances"] and before["functions"]
    teardown(whole.stack, whole.workdir / "teardown.log", delete_data=True, strict=True)
    assert leftovers(whole.stack, strict=True) == NOTHING_LEFT
