"""The whole path end to end, as ``make demo`` runs it (``devstack.fullstack``): the AWS stacks and Lambdas deployed
into the local AWS by their playbooks, the node converged with ``playbooks/site.yml`` and ``inventory/local.yml``
in a systemd container, and prompts sent through the HTTP API. Nothing is stood in for: the model is llama-server
with Gemma 3 270M inside the container, the builder shape's server, started by tl-shape at boot; the queue is
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

from devstack.ansible import PLAYBOOK, play, recap
from devstack.demo import serve_openai
from devstack.deploy import NOTHING_LEFT, leftovers, teardown
from devstack.edge import create_user, id_token
from devstack.fullstack import AGENT, GPU_INFERENCE, HUB_FILE, HUB_REPO, INFERENCE, FullStack
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
    # greedy, as the other tests on the real model: sampled, this small model once answered 400 blank lines
    answer = httpx.post(f"{whole.edge.url}/infer", json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0},
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
    assert node.supervised_pid(AGENT) > 0 and node.unit_active(INFERENCE)
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
    " 'max_tokens': 8, 'temperature': 0}).encode(); print(u.urlopen(u.Request('https://127.0.0.1/v1/completions', body,"
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


def resize(whole: FullStack, token: str, target: str) -> None:
    """``POST /resize`` as an admin (inline here: the local AWS stops at once), then the container shut down and
    booted as EC2 stops and starts the instance."""
    done = httpx.post(f"{whole.edge.url}/resize", params={"target": target},
                      headers={"authorization": f"Bearer {token}"}, timeout=120)  # fmt: skip
    assert (done.status_code, done.json()["status"]) == (200, "resized"), done.text
    assert whole.instance_type() == target and whole.stack.node_state() == "running"
    whole.node.shut_down()
    whole.node.boot()
    whole.node.wait_supervised(AGENT)


def shape_env(whole: FullStack) -> dict[str, str]:
    text = whole.node.exec("cat", "/run/tinyllama/shape.env", check=False).stdout
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_a_resize_boots_the_one_image_as_the_gpu_shape_and_back_as_the_builder(whole: FullStack) -> None:
    """The shape is chosen at boot, by the node: resized to g4dn.xlarge, with a stand-in T4 on the container's PCI
    bus, the same converged container starts the vLLM unit with the GPU shape's arguments, and the agent waits for
    it with the GPU shape's start timeout and says the shape (vLLM itself cannot run here). Resized back to
    t3.small, the builder's llama-server serves, and tl says which shape answered. No Ansible run in between."""
    node = whole.node
    if not node.running():
        node.boot()
    env = {**whole.tl_env(), "TL_TOKEN_FILE": str(whole.workdir / "admin-token.json")}
    create_user(whole.stack, whole.pool, "e2e-admin", PASSWORD, admin=True)
    tl = venv_tool("tl")
    subprocess.run([tl, "login", "--password", "--username", "e2e-admin"], env=env, check=True, capture_output=True,
                   timeout=60)  # fmt: skip
    token = subprocess.run([tl, "token"], env=env, check=True, capture_output=True, text=True).stdout.strip()
    whole.stack.moto.quotas.applied["L-DB2E81BA"] = 4  # the G vCPU quota an operator has asked AWS for
    node.stand_in_gpu(present=True)

    resize(whole, token, "g4dn.xlarge")
    wait_until(lambda: shape_env(whole).get("TL_SHAPE") == "gpu", 60, "tl-shape to choose the GPU shape")
    assert shape_env(whole) == {"TL_SHAPE": "gpu", "TL_INSTANCE_TYPE": "g4dn.xlarge", "TL_MAX_CONCURRENCY": "16",
                                "TL_BACKEND_START_TIMEOUT_S": "900"}  # fmt: skip
    argv = node.exec("systemctl", "show", "--property=ExecStart", "--value", GPU_INFERENCE).stdout
    assert "/opt/tinyllama/vllm-venv/bin/vllm ; argv[]=/opt/tinyllama/vllm-venv/bin/vllm serve" in argv, argv
    for flag in ("--dtype half", "--max-num-seqs 16", "--max-model-len 4096", "--host 127.0.0.1 --port 8000"):
        assert flag in argv, (flag, argv)
    left_inactive = node.exec("systemctl", "show", "--property=InactiveExitTimestampMonotonic", "--value",
                              GPU_INFERENCE).stdout.strip()  # fmt: skip
    assert int(left_inactive or 0) > 0, "tl-shape did not start the GPU shape's server at this boot"
    assert not node.unit_active(INFERENCE)  # the builder's llama-server is not started in the GPU shape
    agent = [json.loads(line) for line in whole.node_log("agent.log") if '"agent starting"' in line][-1]
    assert (agent["shape"], agent["concurrency"], agent["backend_start_timeout_s"]) == ("gpu", 16, 900.0), agent
    beat = whole.queue().heartbeat()
    assert beat is not None and (beat["shape"], beat["instance_type"], beat["state"]) == (
        "gpu", "g4dn.xlarge", "starting"), beat  # fmt: skip

    resize(whole, token, "t3.small")
    wait_until(lambda: shape_env(whole).get("TL_SHAPE") == "builder", 60, "tl-shape to choose the builder")
    assert shape_env(whole)["TL_INSTANCE_TYPE"] == "t3.small"
    assert not node.unit_active(GPU_INFERENCE)
    out = subprocess.run([tl, "infer", "Name a colour.", "--max-tokens", "12", "--poll", "0.25"], env=env,
                         capture_output=True, text=True, timeout=240, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done:" in out.stderr and "on the builder shape" in out.stderr, out.stderr
    assert node.unit_active(INFERENCE)


def test_the_demo_ends_with_tl_serve_and_an_openai_call_that_works(whole: FullStack) -> None:
    """``make demo``'s last step on the whole path: ``tl serve`` for the local API and the ``openai`` client's chat
    completion through it, answered by the node's real model (the same function the demo runs)."""
    env = whole.tl_env()
    subprocess.run([venv_tool("tl"), "login", "--password", "--username", USER], env=env, check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    said: list[str] = []
    answer = serve_openai(whole, env, keep=False, say=said.append)
    assert answer.strip(), said
    printed = "\n".join(said)
    assert 'base_url="http://127.0.0.1:' in printed and "/v1" in printed and "the GUI: http://localhost:" in printed


def test_teardown_keeps_the_data_unless_told_then_leaves_nothing_and_a_second_run_changes_nothing(
    whole: FullStack,
) -> None:
    """Last, as it removes what the others use: the documented teardown, run as the operator under enforced IAM
    after a deploy from an empty account, a converge and replies. Told to keep the data, it leaves only the
    replies bucket, the baked image and its parameter; told to delete it, nothing of the project — the weights'
    copy, the replies and the Redis secrets included; a second run changes nothing."""
    stack = whole.stack
    bucket = whole.deployment.reply_bucket
    with stack.moto.iam_paused("the test publishes what bake_ami.yml and a Session Manager transfer would leave"):
        image = stack.ec2().create_image(InstanceId=whole.deployment.instance_id, Name="tl-baked-test")["ImageId"]
        stack.ec2().create_tags(Resources=[image], Tags=[{"Key": "tl-fif", "Value": "gpu-node"}])
        stack.ssm().put_parameter(Name="/tl-fif/latest_ami_id", Value=image, Type="String", Overwrite=True)
        stack.s3().put_object(Bucket=whole.deployment.outputs["node"]["SsmTransferBucket"], Key="transfer/x", Body=b"x")
    before = leftovers(stack, strict=True)
    assert bucket in before["buckets"] and before["instances"] and before["stacks"] and before["functions"]
    assert "/tl-fif/redis/router" in before["parameters"] and "/aws/lambda/tl-fif-router" in before["log_groups"]

    kept = teardown(stack, whole.workdir / "teardown-kept.log", delete_data=False, strict=True)
    assert "Kept: the replies bucket" in kept.stdout
    after = leftovers(stack, strict=True)
    assert after["stacks"] == [] and after["functions"] == [] and after["instances"] == []
    assert after["log_groups"] == []
    assert after["parameters"] == ["/tl-fif/latest_ami_id"]
    assert after["buckets"] == [bucket] and after["images"] == [image]  # the data

    teardown(stack, whole.workdir / "teardown.log", delete_data=True, strict=True)
    assert leftovers(stack, strict=True) == NOTHING_LEFT

    again = teardown(stack, whole.workdir / "teardown-again.log", delete_data=True, strict=True)
    assert recap(again)["changed"] == 0, again.stdout[-3000:]
