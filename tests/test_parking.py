"""Requests to a sleeping node: parked in S3, the node started once, adopted exactly once, or answered ``expired``.

Everything real: redis-server, the moto server, node agents as processes, v2 events into the router. A sleeping
node's Redis is a black-holed loopback port (``devstack.procs.BlackHole``): connects time out, as they do to a
stopped instance's private address inside a VPC.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from devstack.procs import BlackHole, wait_until
from devstack.stack import Stack, StandInServer
from jobqueue import contract, inbox
from jobqueue.inbox import Inbox
from jobqueue.queue import AsyncJobQueue
from lambdas.queue_health import handler as queue_health
from lambdas.router.app import Router
from node_agent.adoption import Adopter
from tests.support import SigningKey, body_of, setenv, v2_event

pytestmark = pytest.mark.slow


@pytest.fixture
def hole() -> Iterator[BlackHole]:
    with BlackHole() as made:
        yield made


@pytest.fixture
def env(lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    setenv(monkeypatch, lambda_env)
    return lambda_env


def router_at(monkeypatch: pytest.MonkeyPatch, redis_url: str, **settings: str) -> Router:
    monkeypatch.setenv("TL_REDIS_URL", redis_url)
    setenv(monkeypatch, settings)
    return Router.from_env()


@pytest.fixture
def asleep(env: dict[str, str], hole: BlackHole, monkeypatch: pytest.MonkeyPatch) -> Router:
    """The router while the node (and its Redis) sleeps."""
    return router_at(monkeypatch, hole.redis_url)


@pytest.fixture
def awake(env: dict[str, str], stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Router:
    """The router once the node's Redis answers."""
    return router_at(monkeypatch, stack.redis.url)


def stop_node(stack: Stack) -> None:
    stack.ec2().stop_instances(InstanceIds=[stack.instance_id])
    stack.ec2().get_waiter("instance_stopped").wait(InstanceIds=[stack.instance_id], WaiterConfig={"Delay": 0.2})


def ec2_calls(router: Router) -> list[str]:
    calls: list[str] = []
    router.ec2.meta.events.register("before-call.ec2", lambda model, **_: calls.append(model.name))
    return calls


def infer(router: Router, token: str, prompt: str = "hello", **fields: Any) -> dict[str, Any]:
    return router.handle(v2_event("POST", "/infer", body=json.dumps({"prompt": prompt, **fields}), token=token))


def result(router: Router, token: str, job_id: str) -> tuple[int, dict[str, Any]]:
    response = router.handle(v2_event("GET", f"/result/{job_id}", token=token))
    return response["statusCode"], body_of(response)


def parked_ids(stack: Stack) -> list[str]:
    return sorted(Inbox(stack.s3(), stack.bucket).job_ids())


def state_event(stack: Stack) -> dict[str, Any]:
    return {"version": "0", "source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
            "detail": {"instance-id": stack.instance_id, "state": "stopped"}}  # fmt: skip


# ---------------------------------------------------------------- the router parks


def test_a_request_to_a_sleeping_node_is_parked_the_node_started_once_and_the_job_answered_once(
    asleep: Router, awake: Router, stack: Stack, signing_key: SigningKey, *, slow_standin: StandInServer,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    stop_node(stack)
    calls = ec2_calls(asleep)
    token = signing_key.token(sub="sleeper")
    first, second = infer(asleep, token, "one", max_tokens=8), infer(asleep, token, "two", max_tokens=8)
    assert [r["statusCode"] for r in (first, second)] == [202, 202]
    ids = [body_of(r)["id"] for r in (first, second)]
    assert [body_of(r)["status"] for r in (first, second)] == ["starting", "starting"]
    assert body_of(first)["eta"] == 90
    assert calls.count("StartInstances") == 1  # the second request found it pending or running
    assert stack.node_state() in ("pending", "running")
    assert parked_ids(stack) == sorted(ids)
    parked = Inbox(stack.s3(), stack.bucket).get(ids[0])
    assert parked is not None and parked.job["owner"] == "sleeper" and parked.slot
    log = capsys.readouterr().out
    assert "queue not reachable" in log and "Timeout" in log  # the black hole: a connect timeout, not a refusal
    assert result(asleep, token, ids[0]) == (200, {"id": ids[0], "status": "starting", "eta": 90})
    assert result(asleep, signing_key.token(sub="someone-else"), ids[0])[0] == 404

    stack.start_agent(slow_standin.url)  # the node booted: its agent adopts what waits in S3
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not seen or seen[-1] != "done"):
        seen.append(result(awake, token, ids[0])[1]["status"])
        time.sleep(0.05)
    assert seen[-1] == "done" and "running" in seen
    stack.wait_reply(ids[1], 60)
    assert parked_ids(stack) == []
    assert [stack.reply_versions(i) for i in ids] == [1, 1]
    assert [stack.reply(i)["status"] for i in ids] == ["done", "done"]  # type: ignore[index]
    assert stack.queue().depth() == 0


def test_the_sixth_parked_request_of_a_user_is_429_and_another_user_is_not_affected(
    asleep: Router, stack: Stack, signing_key: SigningKey
) -> None:
    stop_node(stack)
    token = signing_key.token(sub="eager")
    statuses = [infer(asleep, token)["statusCode"] for _ in range(5)]
    sixth = infer(asleep, token)
    assert statuses == [202] * 5
    assert sixth["statusCode"] == 429
    assert int(sixth["headers"]["retry-after"]) >= 90  # at least the cold boot's eta
    assert "5 requests waiting" in body_of(sixth)["message"]
    assert infer(asleep, signing_key.token(sub="calm"))["statusCode"] == 202
    assert len(parked_ids(stack)) == 6


def test_the_per_user_cap_holds_when_requests_race(asleep: Router, stack: Stack, signing_key: SigningKey) -> None:
    stop_node(stack)
    token = signing_key.token(sub="racer")
    infer(asleep, token)  # the node is started by this one; the race below is about the slots alone
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: infer(asleep, token)["statusCode"], range(8)))
    assert statuses == [202] * 4 + [429] * 4
    assert len(parked_ids(stack)) == 5


def test_above_the_total_cap_requests_are_503(
    env: dict[str, str], hole: BlackHole, stack: Stack, signing_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = router_at(monkeypatch, hole.redis_url, TL_PARK_MAX="2")
    stop_node(stack)
    assert [infer(router, signing_key.token(sub=f"u{n}"))["statusCode"] for n in range(2)] == [202, 202]
    third = infer(router, signing_key.token(sub="u3"))
    assert (third["statusCode"], body_of(third)["status"]) == (503, "full")
    assert "retry-after" in third["headers"]
    assert len(parked_ids(stack)) == 2


def test_a_request_for_a_draining_node_is_parked_not_queued(
    awake: Router, stack: Stack, signing_key: SigningKey
) -> None:
    for state in ("draining", "stopping"):
        stack.beat(state)
        assert body_of(infer(awake, signing_key.token(sub=state)))["status"] == "starting"
    assert stack.queue().depth() == 0
    assert len(parked_ids(stack)) == 2


def test_a_held_node_parks_nothing(asleep: Router, stack: Stack, signing_key: SigningKey) -> None:
    stop_node(stack)
    stack.ec2().create_tags(Resources=[stack.instance_id], Tags=[{"Key": "tl-hold", "Value": "budget"}])
    response = infer(asleep, signing_key.token())
    assert (response["statusCode"], body_of(response)["status"]) == (503, "held")
    assert parked_ids(stack) == []


def test_a_queue_away_with_nothing_parked_still_says_so(asleep: Router, signing_key: SigningKey) -> None:
    assert result(asleep, signing_key.token(), "0b5c0b6e-64f8-4d3b-9a54-1f3c3e0a9a11")[0] == 503


def test_the_node_is_started_again_when_requests_were_parked_as_it_stopped(
    asleep: Router, stack: Stack, signing_key: SigningKey
) -> None:
    stop_node(stack)
    assert asleep.handle(state_event(stack))["action"] == "none"  # nothing waits
    infer(asleep, signing_key.token())
    stop_node(stack)  # it stopped again before adopting (say, the agent decided to stop as the request came)
    answer = asleep.handle(state_event(stack))
    assert (answer["action"], answer["reason"]) == ("started", "parked requests wait")
    assert stack.node_state() in ("pending", "running")


# ---------------------------------------------------------------- expiry


def test_a_parked_request_no_node_adopts_is_answered_expired(
    asleep: Router, env: dict[str, str], stack: Stack, signing_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop_node(stack)
    monkeypatch.setenv("TL_PARK_TTL_S", "60")
    monkeypatch.setenv("TL_REDIS_URL", asleep.s.redis_url)
    token = signing_key.token(sub="forgotten")
    job_ids = [body_of(infer(asleep, token))["id"] for _ in range(2)]
    store = Inbox(stack.s3(), stack.bucket)
    old = store.get(job_ids[0])
    assert old is not None
    store.remove(job_ids[0], None)  # parked 61 s ago: written again with that time
    store._put_new(inbox.inbox_key(job_ids[0]), inbox.Parked(old.job, time.time() - 61, old.slot, old.reason).encode())

    queue_health.reset()
    swept = queue_health.handler({}, None)  # the scheduled run
    queue_health.reset()
    assert swept["expired"] == 1
    assert parked_ids(stack) == [job_ids[1]]  # the fresh one still waits
    code, body = result(asleep, token, job_ids[0])
    assert (code, body["status"]) == (200, "expired")
    assert "no node took the request within 60 s" in body["error"]
    assert body["reply"]["owner"] == "forgotten" and body["url"]
    assert result(asleep, signing_key.token(sub="intruder"), job_ids[0])[0] == 404
    # the expired job's slot is free again: the user has 4 parked + this one
    assert [infer(asleep, token)["statusCode"] for _ in range(4)] == [202] * 4
    assert infer(asleep, token)["statusCode"] == 429


def test_a_slot_left_by_a_crash_is_freed(stack: Stack) -> None:
    store = Inbox(stack.s3(), stack.bucket)
    for n in range(2):
        store._put_new(inbox.slot_key("crashed", n), b"0b5c0b6e-64f8-4d3b-9a54-1f3c3e0a9a11")
    job = contract.new_job("hi", "crashed")
    with pytest.raises(inbox.InboxError) as refused:
        store.park(job, per_user=2, reason="test")  # both slots are fresh: not stale yet
    assert refused.value.code == "USER_FULL"
    later = time.time() + inbox.SLOT_STALE_S + 1
    store.expire(now=later)
    listed = stack.s3().list_objects_v2(Bucket=stack.bucket, Prefix=inbox.SLOT_PREFIX)
    assert listed.get("KeyCount", 0) == 0
    assert store.park(job, per_user=2, reason="test").slot == inbox.slot_key("crashed", 0)


def test_queue_health_says_asleep_for_a_stopped_node_and_fails_for_a_running_one(
    env: dict[str, str], hole: BlackHole, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TL_REDIS_URL", hole.redis_url)
    queue_health.reset()
    running = queue_health.handler(v2_event("GET", "/queue-health"), None)
    assert (running["statusCode"], body_of(running)["redis"]) == (503, "fail")
    stop_node(stack)
    queue_health.reset()
    asleep = queue_health.handler(v2_event("GET", "/queue-health"), None)
    assert (asleep["statusCode"], body_of(asleep)) == (200, {"redis": "asleep", "node": "stopped"})
    monkeypatch.setenv("TL_QUEUE_MODE", "elasticache")  # there, Redis away is a failure whatever the node does
    queue_health.reset()
    assert queue_health.handler(v2_event("GET", "/queue-health"), None)["statusCode"] == 503
    queue_health.reset()


# ---------------------------------------------------------------- adoption


def adopt(stack: Stack) -> int:
    async def run() -> int:
        client = redis.asyncio.from_url(stack.redis.url)
        try:
            return await Adopter(Inbox(stack.s3(), stack.bucket), AsyncJobQueue(client, "t"), executor).adopt()
        finally:
            await client.aclose()

    with ThreadPoolExecutor(2) as executor:
        return asyncio.run(run())


def test_adoption_queues_each_parked_job_once(stack: Stack) -> None:
    store = Inbox(stack.s3(), stack.bucket)
    queued = stack.submit("already queued")  # parked too, as a crash between enqueue and delete leaves it
    store.put_back(queued, "test")
    fresh = contract.new_job("fresh", "u")
    store.park(fresh, per_user=5, reason="test")
    answered = contract.new_job("answered", "u")
    store.park(answered, per_user=5, reason="test")
    store.write_reply(contract.build_reply(answered["id"], "expired", owner="u", finished_at=time.time()))
    stack.s3().put_object(Bucket=stack.bucket, Key=inbox.inbox_key(contract.new_job("x", "u")["id"]), Body=b"{bad")

    assert adopt(stack) == 1
    assert parked_ids(stack) == []
    assert stack.queue().depth() == 2  # the one queued before, and the fresh one; the answered one not
    r = stack.redis.client()
    assert {json.loads(r.get(contract.job_key(j["id"])) or "{}").get("prompt") for j in (queued, fresh)} == {
        "already queued", "fresh"}  # fmt: skip
    assert adopt(stack) == 0  # nothing twice
    failed = [o["Key"] for o in stack.s3().list_objects_v2(Bucket=stack.bucket, Prefix="replies/")["Contents"]]
    assert len(failed) == 2  # the answered one's, and a `failed` reply for the damaged object
    listed = stack.s3().list_objects_v2(Bucket=stack.bucket, Prefix=inbox.SLOT_PREFIX)
    assert listed.get("KeyCount", 0) == 0


# ---------------------------------------------------------------- the stop window


def test_an_agent_that_stopped_its_node_never_says_ready_again_and_what_came_in_is_answered_after_the_next_start(
    awake: Router, stack: Stack, signing_key: SigningKey, standin: StandInServer
) -> None:
    agent = stack.start_agent(standin.url, TL_STOP_MODE="stop", TL_IDLE_MINUTES="0.05", TL_HEARTBEAT_S="0.2")
    states: list[tuple[float, str, str]] = []
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        r = stack.redis.client()
        while watching.is_set():
            beat = r.get(contract.HEARTBEAT)
            states.append((time.monotonic(), json.loads(beat)["state"] if beat else "-", stack.node_state()))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    wait_until(lambda: stack.node_state() == "stopped", 30, "the agent's idle stop")
    stopped_at = time.monotonic()
    # In the window between StopInstances and the OS's SIGTERM: a request parks, one slips into the queue.
    response = infer(awake, signing_key.token(sub="late"), "late", max_tokens=8)
    assert body_of(response)["status"] == "starting"
    slipped = stack.submit("slipped in", max_tokens=8)
    time.sleep(1.5)
    agent.signal(signal.SIGTERM)  # the OS shuts down
    assert agent.wait(30) == 0
    watching.clear()
    watcher.join(5)
    after = {state for at, state, _ in states if at >= stopped_at}
    decided = next(at for at, state, _ in states if state == "stopping")
    assert {state for at, state, _ in states if at >= decided} <= {"stopping", "-"}, after
    assert stack.queue().depth() == 0  # parked back, not left in a Redis that sleeps with the node
    assert sorted(parked_ids(stack)) == sorted([body_of(response)["id"], slipped["id"]])

    # The instance finishes stopping (moto had it stopped at once, so the late request started it already); EC2's
    # state-change event reaches the router: requests wait, so the node starts; its agent answers both.
    stop_node(stack)
    assert awake.handle(state_event(stack))["action"] == "started"
    stack.start_agent(standin.url)
    for job_id in (body_of(response)["id"], slipped["id"]):
        assert stack.wait_reply(job_id, 60)["status"] == "done"
        assert stack.reply_versions(job_id) == 1
    assert parked_ids(stack) == []


def test_a_redis_killed_mid_run_loses_nothing_accepted(stack: Stack, slow_standin: StandInServer) -> None:
    stack.start_agent(slow_standin.url)
    running = stack.submit("long", max_tokens=16)
    waiting = [stack.submit(f"queued {n}", max_tokens=4) for n in range(3)]
    wait_until(lambda: stack.redis.client().exists(contract.attempts_key(running["id"])) == 1, 20, "the first claim")
    stack.redis.kill()  # kill -9: the append-only file has every acknowledged write (docs/architecture.md)
    stack.redis.start()
    for job in (running, *waiting):
        assert stack.wait_reply(job["id"], 90)["status"] == "done"
        assert stack.reply_versions(job["id"]) == 1
