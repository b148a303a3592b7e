"""The node agent as a process, on the local stack: real redis-server, moto server and a stand-in backend
with a fixed latency (the real model server is in test_model.py)."""

from __future__ import annotations

import json
import signal
import time
import uuid

import httpx
import pytest

from devstack.procs import free_port, wait_until
from devstack.servers import AWS_REGION, MotoServer
from devstack.stack import BUCKET, Stack, StandInServer, wait_reply
from jobqueue import contract
from jobqueue.queue import partial_text

pytestmark = pytest.mark.slow


def test_job_gets_a_done_reply_with_output_usage_and_timings(stack: Stack, standin: StandInServer) -> None:
    stack.start_agent(standin.url)
    job = stack.submit("hello", owner="user-7", max_tokens=16)
    reply = stack.wait_reply(job["id"], 20)
    assert reply["status"] == "done"
    assert reply["id"] == job["id"]
    assert reply["owner"] == "user-7"
    assert reply["output"] == "".join(f" tok{i}" for i in range(8))
    assert reply["model"] == "standin"
    assert reply["usage"]["completion_tokens"] == 8
    assert reply["attempts"] == 1
    timings = reply["timings"]
    assert timings["queued_ms"] >= 0
    assert 0 < timings["ttft_ms"] < timings["total_ms"]
    assert timings["total_ms"] >= 500 * 0.9  # the backend takes 0.5 s
    assert reply["error"] is None


def test_a_chat_job_goes_to_chat_completions_and_its_reply_carries_the_message(
    stack: Stack, standin: StandInServer
) -> None:
    stack.start_agent(standin.url)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    job = stack.submit(None, messages=messages, max_tokens=16, top_p=0.5, stop=["\n"], seed=3)
    reply = stack.wait_reply(job["id"], 20)
    assert reply["status"] == "done", reply["error"]
    text = "".join(f" tok{i}" for i in range(8))
    assert (reply["output"], reply["message"], reply["finish_reason"]) == (
        text, {"role": "assistant", "content": text}, "length"
    )  # fmt: skip
    sent = httpx.get(f"{standin.url}/stats").json()["last"]
    assert sent["path"] == "/v1/chat/completions"
    assert (sent["body"]["messages"], sent["body"]["top_p"], sent["body"]["stop"], sent["body"]["seed"]) == (
        messages, 0.5, ["\n"], 3
    )  # fmt: skip
    assert "prompt" not in sent["body"] and sent["body"]["stream"] is True
    live = stack.redis.client().xrange(contract.reply_stream_key(job["id"]))
    assert partial_text(live) == text  # the live text reads the same for a chat as for a prompt


def test_partial_text_is_streamed_to_redis_while_the_job_runs(stack: Stack, slow_standin: StandInServer) -> None:
    stack.start_agent(slow_standin.url)
    r = stack.redis.client()
    job = stack.submit("hello")
    key = contract.reply_stream_key(job["id"])
    wait_until(lambda: any("text" in f for _, f in r.xrange(key)), 10, "partial text")
    assert stack.reply(job["id"]) is None  # still running, yet text is visible
    assert 0 < r.ttl(key) <= contract.REPLY_STREAM_TTL_S
    stack.wait_reply(job["id"], 20)
    events = [f for _, f in r.xrange(key)]
    assert events[0] == {"attempt": "1"}
    assert events[-1] == {"status": "done"}
    assert "".join(f.get("text", "") for f in events) == stack.reply(job["id"])["output"]  # type: ignore[index]


def test_never_more_jobs_in_flight_than_max_concurrency(stack: Stack, standin: StandInServer) -> None:
    stack.start_agent(standin.url, TL_MAX_CONCURRENCY="3")
    jobs = [stack.submit(f"job {i}") for i in range(12)]
    for job in jobs:
        assert stack.wait_reply(job["id"], 30)["status"] == "done"
    stats = standin.stats()
    assert stats["served"] == 12
    assert stats["peak"] == 3


def test_heartbeat_reports_state_with_a_short_ttl(stack: Stack, slow_standin: StandInServer) -> None:
    stack.start_agent(slow_standin.url, TL_HEARTBEAT_S="0.5")
    q = stack.queue()
    wait_until(lambda: (q.heartbeat() or {}).get("state") == "ready", 5, "ready heartbeat")
    beat = q.heartbeat() or {}
    assert beat["instance_id"] == stack.instance_id
    assert beat["model"] == "standin"
    assert 0 < stack.redis.client().pttl(contract.HEARTBEAT) <= 1500
    job = stack.submit("hello")
    wait_until(lambda: (q.heartbeat() or {}).get("state") == "busy", 5, "busy heartbeat")
    stack.wait_reply(job["id"], 20)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("{not json", "invalid job: job: not valid JSON"),
        ('{"id": "%s"}', "invalid job: job: must contain"),
        (
            '{"v":1,"id":"%s","prompt":42,"idle_minutes":5,"reply_key":"replies/%s.json","created_at":1,"owner":"u"}',
            "invalid job: prompt: must be string",
        ),
        (
            '{"v":1,"id":"%s","prompt":"' + "x" * 7000 + '","idle_minutes":5,"reply_key":"replies/%s.json",'
            '"created_at":1,"owner":"u"}',
            "invalid job: prompt: must be shorter than or equal to 6144",
        ),
    ],
    ids=["bad-json", "missing-fields", "wrong-type", "oversized-prompt"],
)
def test_malformed_job_gets_a_failed_reply_and_a_dead_letter(
    stack: Stack, standin: StandInServer, payload: str, reason: str
) -> None:
    job_id = str(uuid.uuid4())
    r = stack.redis.client()
    r.set(contract.job_key(job_id), payload.replace("%s", job_id), ex=300)  # written by hand, bypassing the router
    r.xadd(contract.QUEUE_STREAM, {"id": job_id})
    stack.start_agent(standin.url)
    reply = stack.wait_reply(job_id, 20)
    assert reply["status"] == "failed"
    assert reply["error"].startswith(reason)
    (dead,) = r.lrange(contract.DEAD_LETTERS, 0, -1)  # settled with the reply: Stack.wait_reply waits for both
    assert json.loads(dead)["id"] == job_id
    good = stack.submit("still working")  # the loop survived
    assert stack.wait_reply(good["id"], 20)["status"] == "done"


def test_job_expired_before_it_was_claimed_gets_an_expired_reply(stack: Stack, standin: StandInServer) -> None:
    job = stack.submit("too late")
    stack.redis.client().pexpire(contract.job_key(job["id"]), 1)  # its 300 s ran out while the node was off
    time.sleep(0.05)
    stack.start_agent(standin.url)
    reply = stack.wait_reply(job["id"], 20)
    assert reply["status"] == "expired"
    assert "not claimed within 300 s" in reply["error"]
    assert stack.queue().depth() == 0  # the entry settled (Stack.wait_reply waits for the settlement)


def test_error_chunk_after_http_200_is_retried_then_failed_after_max_attempts(
    stack: Stack, standin: StandInServer
) -> None:
    stack.start_agent(standin.url, TL_MAX_ATTEMPTS="3", TL_CLAIM_TIMEOUT_S="3")
    job = stack.submit("[[error-chunk]] please")
    reply = stack.wait_reply(job["id"], 30)
    assert reply["status"] == "failed"
    assert reply["attempts"] == 3
    assert "attempt 3 of 3: backend error during the stream: engine died" in reply["error"]
    (dead,) = stack.redis.client().lrange(contract.DEAD_LETTERS, 0, -1)
    assert json.loads(dead)["id"] == job["id"]


def test_rerun_of_a_job_whose_reply_exists_keeps_the_first_reply(stack: Stack, standin: StandInServer) -> None:
    job = stack.submit("hello")
    first = {"id": job["id"], "status": "done", "output": "first answer", "error": None,
             "timings": {"finished_at": 1.0}, "attempts": 1}  # fmt: skip
    # An earlier agent wrote the reply, then died before settling the job in Redis.
    stack.s3().put_object(Bucket=BUCKET, Key=job["reply_key"], Body=json.dumps(first).encode())
    stack.start_agent(standin.url)
    wait_until(lambda: stack.queue().depth() == 0, 20, "the job to be settled")
    assert stack.reply(job["id"]) == first
    assert (stack.queue().result(job["id"]) or {})["status"] == "done"


def test_killed_agent_jobs_are_run_again_and_each_gets_exactly_one_reply(
    stack: Stack, slow_standin: StandInServer
) -> None:
    agent = stack.start_agent(slow_standin.url, TL_MAX_CONCURRENCY="4")
    jobs = [stack.submit(f"job {i}") for i in range(6)]
    wait_until(lambda: slow_standin.stats()["running"] == 4, 10, "four jobs running")
    agent.kill()  # kill -9 in the middle of four jobs
    stack.start_agent(slow_standin.url, TL_MAX_CONCURRENCY="4")  # supervisor restarts it (same consumer)
    for job in jobs:
        reply = stack.wait_reply(job["id"], 40)
        assert reply["status"] == "done"
        assert stack.reply_versions(job["id"]) == 1
    assert stack.queue().depth() == 0  # every job settled (Stack.wait_reply waits for the settlement)


def test_jobs_of_a_dead_agent_are_reclaimed_by_another_within_30_s(stack: Stack, slow_standin: StandInServer) -> None:
    dead = stack.start_agent(slow_standin.url, TL_CONSUMER="node-a")
    job = stack.submit("hello")
    wait_until(lambda: slow_standin.stats()["running"] == 1, 10, "the job to run")
    dead.kill()
    killed_at = time.monotonic()
    stack.start_agent(slow_standin.url, TL_CONSUMER="node-b")  # a different agent: only XAUTOCLAIM helps
    reply = stack.wait_reply(job["id"], 40)
    assert reply["status"] == "done"
    assert reply["attempts"] == 2
    assert reply["timings"]["claimed_at"] - (time.time() - (time.monotonic() - killed_at)) <= 30


def test_a_busy_agent_still_sweeps_for_expired_claims(stack: Stack, standin: StandInServer) -> None:
    """A finished job claims the next for its slot itself, but not once a sweep is due: a dead agent's job is taken
    back while a backlog of new jobs keeps every slot full, not only once the backlog is gone."""
    jobs = [stack.submit(f"job {i}") for i in range(32)]
    stack.start_agent(standin.url, TL_MAX_CONCURRENCY="2", TL_CLAIM_TIMEOUT_S="2")  # 0.5 s a job: 8 s in all
    # another agent claims the oldest job not yet delivered, and dies: its claim expires 2 s later
    taken = stack.redis.client().xreadgroup(contract.CONSUMER_GROUP, "node-dead", {contract.QUEUE_STREAM: ">"}, count=1)
    orphan = taken[0][1][0][1]["id"]
    replies = {job["id"]: stack.wait_reply(job["id"], 40) for job in jobs}
    assert all(reply["status"] == "done" for reply in replies.values())
    claims = sorted(reply["timings"]["claimed_at"] for reply in replies.values())
    # reclaimed at the first sweep after it expired, with most of the backlog still queued; without the sweeps it
    # would have waited for the backlog to drain
    assert replies[orphan]["timings"]["claimed_at"] < claims[-8]


def test_redis_restart_mid_run_loses_nothing(stack: Stack, slow_standin: StandInServer) -> None:
    stack.start_agent(slow_standin.url, TL_MAX_CONCURRENCY="2")
    jobs = [stack.submit(f"job {i}") for i in range(4)]
    wait_until(lambda: slow_standin.stats()["running"] == 2, 10, "two jobs running")
    stack.redis.restart()
    for job in jobs:
        assert stack.wait_reply(job["id"], 60)["status"] == "done"
    wait_until(lambda: stack.queue().depth() == 0, 10, "queue drained")


def test_replies_are_written_once_s3_is_back(stack: Stack, standin: StandInServer) -> None:
    s3_port = free_port()  # nothing listens here yet: S3 is unreachable
    agent_env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "TL_CLOUDWATCH": "off",
    }
    stack.start_agent(standin.url, **agent_env)
    jobs = [stack.submit(f"job {i}") for i in range(3)]
    log = stack.agents[0].log_path
    wait_until(lambda: log.read_text().count("cannot store the reply in S3") >= 3, 30, "S3 failures")
    s3 = MotoServer(stack.workdir / "moto-late", port=s3_port)
    s3.start()
    try:
        client = s3.client("s3")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": AWS_REGION})
        for job in jobs:
            assert wait_reply(client, job["id"], 60)["status"] == "done"
    finally:
        s3.stop()


def test_sigterm_lets_in_flight_jobs_finish(stack: Stack, slow_standin: StandInServer) -> None:
    agent = stack.start_agent(slow_standin.url, TL_SHUTDOWN_GRACE_S="20")
    jobs = [stack.submit(f"job {i}") for i in range(2)]
    wait_until(lambda: slow_standin.stats()["running"] == 2, 10, "jobs running")
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    for job in jobs:
        assert stack.reply(job["id"])["status"] == "done"  # type: ignore[index]
    assert stack.queue().heartbeat() is None  # the router sees at once that the node is going


def test_sigterm_hands_back_what_cannot_finish_in_the_grace_period(stack: Stack, slow_standin: StandInServer) -> None:
    agent = stack.start_agent(slow_standin.url, TL_SHUTDOWN_GRACE_S="0.5", TL_CONSUMER="node-a")
    job = stack.submit("long")
    wait_until(lambda: slow_standin.stats()["running"] == 1, 10, "job running")
    agent.signal(signal.SIGTERM)
    assert agent.wait(15) == 0
    assert stack.reply(job["id"]) is None
    stack.start_agent(slow_standin.url, TL_CONSUMER="node-b")
    reply = stack.wait_reply(job["id"], 30)
    assert reply["status"] == "done"
    assert reply["attempts"] == 1  # the hand-back did not count as a failed attempt


def test_sigterm_while_redis_is_away_stops_the_agent_at_once(stack: Stack, standin: StandInServer) -> None:
    """Supervisor's stop (a converge's restart, a reboot) while Redis does not answer: the agent does not wait for
    it, so supervisor need not kill it after its stopwaitsecs."""
    agent = stack.start_agent(standin.url, wait=False, TL_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    wait_until(lambda: "cannot connect to Redis" in agent.log_path.read_text(), 30, "the agent to retry Redis")
    agent.signal(signal.SIGTERM)
    assert agent.wait(5) == 0
    assert '"agent stopped"' in agent.log_path.read_text()


def test_sigterm_while_the_model_server_is_not_up_stops_the_agent_at_once(stack: Stack) -> None:
    """The same while the agent waits for the model server (a boot still loading the model): it stops waiting,
    claims nothing, and never reports ready."""
    agent = stack.start_agent(f"http://127.0.0.1:{free_port()}", wait=False)
    wait_until(lambda: "waiting for backend" in agent.log_path.read_text(), 30, "the agent to wait for the backend")
    agent.signal(signal.SIGTERM)
    assert agent.wait(5) == 0
    log = agent.log_path.read_text()
    assert '"agent stopped"' in log and '"agent ready"' not in log


def test_metrics_are_exposed_on_loopback(stack: Stack, standin: StandInServer) -> None:
    port = free_port()
    agent = stack.start_agent(standin.url, TL_METRICS_PORT=str(port))
    job = stack.submit("hello")
    stack.wait_reply(job["id"], 20)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'tl_jobs_total{status="done"} 1.0' in text
    assert "tl_job_total_seconds_count 1.0" in text
    assert "tl_job_time_to_first_token_seconds_count 1.0" in text
    assert "tl_job_queue_wait_seconds_count 1.0" in text
    assert "tl_backend_up 1.0" in text
    for name in (
        "tl_jobs_in_flight",
        "tl_queue_depth",
        "tl_idle_stop_seconds",
        "tl_auto_stops_total",
        "tl_event_loop_lag_seconds_count",
    ):
        assert name in text
    agent.signal(signal.SIGTERM)
    agent.wait(20)
    # Job latency reaches CloudWatch (flushed at the latest when the agent stops).
    names = {m["MetricName"] for m in stack.cloudwatch().list_metrics(Namespace="TLFIF")["Metrics"]}
    assert {"JobLatencyMs", "TimeToFirstTokenMs", "QueueWaitMs", "QueueDepth"} <= names


def test_invalid_configuration_exits_with_every_problem_named(stack: Stack, standin: StandInServer) -> None:
    agent = stack.start_agent(standin.url, wait=False, TL_MAX_CONCURRENCY="0", TL_STOP_MODE="maybe")
    assert agent.wait(20) == 2
    out = agent.log_path.read_text()
    assert "TL_MAX_CONCURRENCY='0': must be between 1 and 256" in out
    assert "TL_STOP_MODE='maybe': must be one of stop, dry-run" in out
