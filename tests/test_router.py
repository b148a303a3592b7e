"""The router against the real local stack: redis-server, the moto server, API Gateway v2 events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.stack import BUCKET, Stack
from jobqueue import contract
from lambdas.common.node import HOLD_TAG
from lambdas.router import handler as router_handler
from lambdas.router.app import Router
from tests.support import SigningKey, body_of, emf_metrics, setenv, v2_event

pytestmark = pytest.mark.slow


@pytest.fixture
def router(lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    setenv(monkeypatch, lambda_env)
    yield Router.from_env()
    router_handler.reset()


@pytest.fixture
def ec2_calls(router: Router) -> list[str]:
    calls: list[str] = []
    router.ec2.meta.events.register("before-call.ec2", lambda model, **_: calls.append(model.name))
    return calls


def set_state(stack: Stack, state: str) -> None:
    ec2 = stack.ec2()
    if state == "stopped":
        ec2.stop_instances(InstanceIds=[stack.instance_id])
    ec2.get_waiter(f"instance_{state}").wait(InstanceIds=[stack.instance_id], WaiterConfig={"Delay": 0.2})


def infer(router: Router, token: str, body: Any = None, **kw: Any) -> dict[str, Any]:
    raw = json.dumps(body if body is not None else {"prompt": "hello"}) if not isinstance(body, str | bytes) else body
    return router.handle(v2_event("POST", "/infer", body=raw, token=token, **kw))


# ---------------------------------------------------------------- POST /infer


def test_job_for_a_serving_node_is_queued_without_any_aws_call(
    router: Router, stack: Stack, signing_key: SigningKey, ec2_calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    stack.beat()
    response = infer(router, signing_key.token(sub="u1"), {"prompt": "hi", "max_tokens": 8, "temperature": 0.2})
    assert response["statusCode"] == 202
    body = body_of(response)
    assert body["status"] == "queued"
    assert response["headers"]["x-request-id"] == body["id"]
    assert ec2_calls == []
    job = json.loads(stack.redis.client().get(contract.job_key(body["id"])) or "")
    assert (job["prompt"], job["owner"], job["max_tokens"], job["temperature"]) == ("hi", "u1", 8, 0.2)
    assert 295 <= stack.redis.client().ttl(contract.job_key(body["id"])) <= 300
    log = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"msg":"request"' in line]
    assert log[-1]["status"] == 202 and log[-1]["route"] == "POST /infer" and log[-1]["latencyMs"] >= 0


def test_a_chat_job_is_queued_with_its_messages_and_sampling_fields(
    router: Router, stack: Stack, signing_key: SigningKey
) -> None:
    stack.beat()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    body = {"messages": messages, "top_p": 0.9, "stop": "\n", "seed": 7, "max_tokens": 16}
    response = infer(router, signing_key.token(sub="u1"), body)
    assert response["statusCode"] == 202, response
    job = contract.decode(stack.redis.client().get(contract.job_key(body_of(response)["id"])) or "")
    assert contract.is_chat(job) and "prompt" not in job
    # one stop string is a list of one, as OpenAI's APIs take either
    assert (job["messages"], job["top_p"], job["stop"], job["seed"]) == (messages, 0.9, ["\n"], 7)


def test_a_stopped_node_is_started_once(
    router: Router, stack: Stack, signing_key: SigningKey, ec2_calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    set_state(stack, "stopped")
    response = infer(router, signing_key.token())
    body = body_of(response)
    assert (response["statusCode"], body["status"], body["eta"]) == (202, "starting", 90)
    assert ec2_calls.count("StartInstances") == 1
    assert stack.node_state() in ("pending", "running")
    assert [m["EC2Starts"] for m in emf_metrics(capsys.readouterr().out) if "EC2Starts" in m] == [1]
    assert stack.queue().depth() == 1


def test_a_running_node_without_heartbeat_is_not_started_again_and_a_wake_is_recorded(
    router: Router, stack: Stack, signing_key: SigningKey, ec2_calls: list[str]
) -> None:
    response = infer(router, signing_key.token())  # moto's instance runs; no agent has said anything
    assert body_of(response)["status"] == "starting"
    assert "StartInstances" not in ec2_calls
    assert stack.redis.client().exists(contract.WAKE)


def test_a_draining_node_counts_as_not_serving(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    stack.beat("draining")
    assert body_of(infer(router, signing_key.token()))["status"] == "starting"
    assert stack.queue().depth() == 0  # parked in S3 (tests/test_parking.py), not queued for a node going away


@pytest.mark.parametrize("state", ["pending", "stopping"])
def test_a_node_in_transition_gets_no_second_start(
    router: Router, stack: Stack, signing_key: SigningKey, ec2_calls: list[str], state: str
) -> None:
    # moto jumps straight to running/stopped, so the transition state is shown to the router by a stubbed
    # describe call (botocore's Stubber); enqueueing and the wake request still go to the real Redis.
    from botocore.stub import Stubber  # noqa: PLC0415

    instance = {"InstanceId": stack.instance_id, "State": {"Name": state, "Code": 0}, "InstanceType": "t3.small",
                "Tags": [{"Key": "env", "Value": "tinyllama"}]}  # fmt: skip
    with Stubber(router.ec2) as stub:
        stub.add_response("describe_instances", {"Reservations": [{"Instances": [instance]}]})
        response = infer(router, signing_key.token())
        stub.assert_no_pending_responses()
    assert body_of(response)["status"] == "starting"
    assert "StartInstances" not in ec2_calls
    assert stack.queue().depth() == 1


def test_a_held_node_is_not_started_and_nothing_is_queued(
    router: Router, stack: Stack, signing_key: SigningKey
) -> None:
    set_state(stack, "stopped")
    stack.ec2().create_tags(Resources=[stack.instance_id], Tags=[{"Key": HOLD_TAG, "Value": "budget-2026-11-23"}])
    response = infer(router, signing_key.token())
    assert (response["statusCode"], body_of(response)["status"]) == (503, "held")
    assert stack.node_state() == "stopped"
    assert stack.redis.client().dbsize() <= 1  # only the user's throttle bucket


def test_no_node_is_a_503_and_nothing_is_queued(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    stack.ec2().terminate_instances(InstanceIds=[stack.instance_id])
    response = infer(router, signing_key.token())
    assert (response["statusCode"], body_of(response)["status"]) == (503, "no-node")
    assert stack.queue().depth() == 0


BAD_BODIES = [
    ("", "body"),
    ("not json", "body"),
    ("[1, 2]", "body"),
    ('{"prompt": ""}', "prompt"),
    ('{"prompt": 5}', "prompt"),
    ('{"prompt": "x", "model": "gpt"}', "model"),
    ('{"prompt": "x", "idle_minutes": 0}', "idle_minutes"),
    ('{"prompt": "x", "idle_minutes": 31}', "idle_minutes"),
    ('{"prompt": "x", "idle_minutes": 2.5}', "idle_minutes"),
    ('{"prompt": "x", "idle_minutes": true}', "idle_minutes"),
    ('{"prompt": "x", "max_tokens": 0}', "max_tokens"),
    ('{"prompt": "x", "max_tokens": 4097}', "max_tokens"),
    ('{"prompt": "x", "temperature": "hot"}', "temperature"),
    ('{"prompt": "x", "temperature": NaN}', "body"),
    ('{"prompt": "x", "temperature": 2.5}', "temperature"),
    ('{"prompt": "\\ud800"}', "prompt"),
    ('{"prompt": "' + "€" * 2049 + '"}', "prompt"),  # 2,049 characters but 6,147 bytes
    (b'{"prompt": "\xff\xfe"}', "body"),  # not UTF-8 (sent base64-encoded, as API Gateway does)
    # chat: the input is prompt or messages, exactly one (jobqueue.contract.check_input)
    ("{}", "prompt"),
    ('{"prompt": "x", "messages": [{"role": "user", "content": "x"}]}', "prompt"),
    ('{"messages": []}', "messages"),
    ('{"messages": {"role": "user", "content": "x"}}', "messages"),
    ('{"messages": [{"role": "tool", "content": "x"}]}', "messages[0].role"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": 5}]}', "messages[1].content"),
    ('{"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}', "messages[0].content"),
    ('{"messages": [{"role": "user"}]}', "messages[0]"),
    ('{"messages": [{"role": "user", "content": ""}]}', "messages"),
    ('{"messages": [{"role": "user", "content": "' + "€" * 2049 + '"}]}', "messages"),
    ('{"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}', "stop"),
    ('{"prompt": "x", "stop": [1]}', "stop[0]"),
    ('{"prompt": "x", "top_p": 0}', "top_p"),
    ('{"prompt": "x", "seed": 1.5}', "seed"),
    ('{"prompt": "x", "seed": 4294967296}', "seed"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_bodies_are_400_naming_the_field_and_queue_nothing(
    router: Router, stack: Stack, signing_key: SigningKey, body: str | bytes, field: str
) -> None:
    stack.beat()
    response = infer(router, signing_key.token(), body)
    assert response["statusCode"] == 400, response
    answer = body_of(response)
    assert answer["field"] == field
    assert answer["message"].startswith(f"{field}: ")
    assert stack.queue().depth() == 0


def test_a_prompt_of_exactly_6144_bytes_is_accepted(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    stack.beat()
    assert infer(router, signing_key.token(), {"prompt": "€" * 2048})["statusCode"] == 202


def test_a_body_over_16_kb_is_413(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    response = infer(router, signing_key.token(), json.dumps({"prompt": "x" * 17_000}))
    assert response["statusCode"] == 413
    assert stack.queue().depth() == 0


def test_the_sixth_rapid_call_is_429_with_retry_after(
    router: Router, stack: Stack, signing_key: SigningKey, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.beat()
    token = signing_key.token(sub="hasty")
    statuses = [infer(router, token)["statusCode"] for _ in range(5)]
    sixth = infer(router, token)
    assert statuses == [202] * 5
    assert sixth["statusCode"] == 429
    assert int(sixth["headers"]["retry-after"]) == 3  # one token every 3 s at 20 a minute
    assert stack.queue().depth() == 5
    assert [m["RateLimitBreaches"] for m in emf_metrics(capsys.readouterr().out) if "RateLimitBreaches" in m] == [1]
    assert infer(router, signing_key.token(sub="patient"))["statusCode"] == 202  # per user


def test_the_bucket_refills_at_twenty_a_minute(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    stack.beat()
    q = stack.queue()
    assert all(q.take_token("u", 5, 20) == 0 for _ in range(5))
    assert 2900 <= q.take_token("u", 5, 20) <= 3000
    time.sleep(3.1)
    assert q.take_token("u", 5, 20) == 0


def test_redis_down_parks_the_request_with_a_metric(
    router: Router, stack: Stack, signing_key: SigningKey, capsys: pytest.CaptureFixture[str]
) -> None:
    stack.redis.stop()
    response = infer(router, signing_key.token())
    assert (response["statusCode"], body_of(response)["status"]) == (202, "starting")
    assert [m["JobsParked"] for m in emf_metrics(capsys.readouterr().out) if "JobsParked" in m] == [1]
    listed = stack.s3().list_objects_v2(Bucket=BUCKET, Prefix="inbox/")
    assert [o["Key"] for o in listed["Contents"]] == [f"inbox/{body_of(response)['id']}.json"]


def test_a_full_queue_is_503_and_leaves_nothing_behind(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    stack.beat()
    r = stack.redis.client()
    with r.pipeline() as pipe:
        for _ in range(contract.MAX_QUEUE_LENGTH):
            pipe.xadd(contract.QUEUE_STREAM, {"id": "x"})
        pipe.execute()
    keys_before = set(r.keys("*"))
    response = infer(router, signing_key.token(sub="late"))
    assert response["statusCode"] == 503 and response["headers"]["retry-after"] == "30"
    assert set(r.keys("*")) - keys_before <= {contract.rate_key("late")}


# ---------------------------------------------------------------- auth, switches, ping


def test_no_token_is_401_and_a_bad_one_403(router: Router, signing_key: SigningKey) -> None:
    assert router.handle(v2_event("POST", "/infer", body='{"prompt":"x"}'))["statusCode"] == 401
    assert infer(router, signing_key.token(aud="other"))["statusCode"] == 403
    assert infer(router, "garbage")["statusCode"] == 403


def test_ping_needs_no_token(router: Router) -> None:
    response = router.handle(v2_event("GET", "/ping"))
    assert (response["statusCode"], body_of(response)) == (200, {"status": "ok"})


def test_ping_answers_only_inside_the_listed_networks(
    lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    setenv(monkeypatch, lambda_env, TL_PING_CIDRS="10.20.0.0/22, 2001:db8:20::/56")
    router = Router.from_env()

    def ping_from(source: str) -> int:
        event = v2_event("GET", "/ping")
        event["requestContext"]["http"]["sourceIp"] = source
        return int(router.handle(event)["statusCode"])

    assert ping_from("10.20.1.17") == 200 and ping_from("2001:db8:20:1::9") == 200
    assert ping_from("192.0.2.1") == 403 and ping_from("2001:db8:21::1") == 403 and ping_from("") == 403
    event = v2_event("GET", "/ping")
    event["requestContext"]["http"]["sourceIp"] = "198.51.100.7"
    assert "only inside the service's network" in body_of(router.handle(event))["message"]


def test_the_kill_switch_closes_every_route_but_ping(
    lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, signing_key: SigningKey
) -> None:
    setenv(monkeypatch, lambda_env, TL_DISABLE_LAM_ROUTER="1")
    router_handler.reset()
    token = signing_key.token()
    for method, path in [("POST", "/infer"), ("GET", f"/result/{uuid.uuid4()}"), ("POST", "/stop")]:
        response = router_handler.handler(v2_event(method, path, body="{}", token=token), None)
        assert (response["statusCode"], body_of(response)["status"]) == (503, "disabled")
    assert router_handler.handler(v2_event("GET", "/ping"), None)["statusCode"] == 200
    router_handler.reset()


def test_an_unknown_route_is_404(router: Router, signing_key: SigningKey) -> None:
    assert router.handle(v2_event("GET", "/admin", token=signing_key.token()))["statusCode"] == 404


def test_a_default_route_is_matched_by_path(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    stack.beat()
    event = v2_event("POST", "/infer", body='{"prompt":"x"}', token=signing_key.token(), route_key="$default")
    assert router.handle(event)["statusCode"] == 202


def test_a_token_from_cognito_is_accepted(
    stack: Stack, lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An id token that moto's Cognito issued, checked against that pool's JWKS."""
    cognito = stack.moto.client("cognito-idp")
    pool = cognito.create_user_pool(PoolName="tl")["UserPool"]["Id"]
    client = cognito.create_user_pool_client(UserPoolId=pool, ClientName="tl", ExplicitAuthFlows=["USER_PASSWORD_AUTH"])
    client_id = client["UserPoolClient"]["ClientId"]
    cognito.admin_create_user(UserPoolId=pool, Username="bob", TemporaryPassword="Temp-pass-1!")
    cognito.admin_set_user_password(UserPoolId=pool, Username="bob", Password="Real-pass-1!", Permanent=True)
    token = cognito.initiate_auth(ClientId=client_id, AuthFlow="USER_PASSWORD_AUTH",
                                  AuthParameters={"USERNAME": "bob", "PASSWORD": "Real-pass-1!"})  # fmt: skip
    env = {
        **lambda_env,
        "TL_JWKS_URL": f"{stack.moto.url}/{pool}/.well-known/jwks.json",
        "TL_JWT_ISSUER": f"https://cognito-idp.eu-central-1.amazonaws.com/{pool}",
        "TL_JWT_AUDIENCE": client_id,
    }
    setenv(monkeypatch, env)
    stack.beat()
    response = Router.from_env().handle(v2_event("POST", "/infer", body='{"prompt":"x"}',
                                                 token=token["AuthenticationResult"]["IdToken"]))  # fmt: skip
    assert response["statusCode"] == 202


# ---------------------------------------------------------------- GET /result/{id}


def result(router: Router, token: str, job_id: str) -> tuple[int, dict[str, Any]]:
    response = router.handle(v2_event("GET", f"/result/{job_id}", token=token))
    return response["statusCode"], body_of(response)


def test_results_are_seen_only_by_their_owner(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    stack.beat()
    job_id = body_of(infer(router, signing_key.token(sub="owner")))["id"]
    assert result(router, signing_key.token(sub="owner"), job_id) == (200, {"id": job_id, "status": "queued"})
    assert result(router, signing_key.token(sub="someone-else"), job_id)[0] == 404
    assert result(router, signing_key.token(sub="owner"), str(uuid.uuid4()))[0] == 404
    assert result(router, signing_key.token(sub="owner"), "../../etc/passwd")[0] == 404


def test_result_follows_the_job_from_starting_to_done(
    router: Router, stack: Stack, signing_key: SigningKey, standin: Any
) -> None:
    token = signing_key.token(sub="follower")
    job_id = body_of(infer(router, token, {"prompt": "tell me", "max_tokens": 16}))["id"]
    assert result(router, token, job_id)[1]["status"] == "starting"
    stack.start_agent(standin.url)
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, body = result(router, token, job_id)
        seen.append(body["status"])
        if body["status"] == "running":
            assert isinstance(body["text"], str)
        if body["status"] == "done":
            break
        time.sleep(0.05)
    assert seen[-1] == "done" and "running" in seen
    assert body["reply"]["id"] == job_id and body["reply"]["output"]
    fetched = httpx.get(body["url"], timeout=5)  # the presigned URL works against the local S3
    assert fetched.status_code == 200 and json.loads(fetched.content)["id"] == job_id
    assert f"/{BUCKET}/replies/{job_id}.json" in body["url"] or f"{BUCKET}." in body["url"]


def test_result_of_a_failed_job_carries_its_error(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    stack.beat()
    token = signing_key.token(sub="f")
    job_id = body_of(infer(router, token))["id"]
    r = stack.redis.client()
    r.set(contract.result_key(job_id), json.dumps({"status": "failed", "finished_at": 1.0, "error": "backend 400"}))
    code, body = result(router, token, job_id)
    assert (code, body["status"], body["error"]) == (200, "failed", "backend 400")
    assert "reply" not in body  # no reply object was written by this test


def test_a_job_never_claimed_in_time_reads_expired(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    stack.beat()
    token = signing_key.token(sub="slow")
    job_id = body_of(infer(router, token))["id"]
    stack.redis.client().delete(contract.job_key(job_id))  # what the 300 s TTL does
    assert result(router, token, job_id)[1]["status"] == "expired"


def test_partial_text_of_a_retried_attempt_starts_afresh(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    stack.beat()
    token = signing_key.token(sub="p")
    job_id = body_of(infer(router, token))["id"]
    r = stack.redis.client()
    r.hset(contract.attempts_key(job_id), "attempts", 2)
    key = contract.reply_stream_key(job_id)
    for fields in ({"attempt": "1"}, {"text": "lost "}, {"attempt": "2"}, {"text": "Hello"}, {"text": ", world"}):
        r.xadd(key, fields)
    assert result(router, token, job_id)[1] == {"id": job_id, "status": "running", "text": "Hello, world"}


def test_result_with_redis_down_is_503(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    stack.redis.stop()
    assert result(router, signing_key.token(), str(uuid.uuid4()))[0] == 503


# ---------------------------------------------------------------- POST /stop and the EC2 state event


def test_stop_stops_the_node_and_cancels_a_wake(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    stack.redis.client().set(contract.WAKE, "1")
    response = router.handle(v2_event("POST", "/stop", token=signing_key.token()))
    assert (response["statusCode"], body_of(response)["status"]) == (202, "stopping")
    set_state(stack, "stopped")
    assert not stack.redis.client().exists(contract.WAKE)
    again = router.handle(v2_event("POST", "/stop", token=signing_key.token()))
    assert (again["statusCode"], body_of(again)["status"]) == (200, "stopped")
    assert router.handle(v2_event("POST", "/stop"))["statusCode"] == 401


def state_event(instance_id: str, state: str) -> dict[str, Any]:
    return {"version": "0", "source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification",
            "detail": {"instance-id": instance_id, "state": state}}  # fmt: skip


def test_a_node_that_stopped_under_a_fresh_job_is_started_again(
    router: Router, stack: Stack, signing_key: SigningKey
) -> None:
    infer(router, signing_key.token())  # queued for a running node whose agent has not spoken yet
    set_state(stack, "stopped")
    assert router.handle(state_event(stack.instance_id, "stopped"))["action"] == "started"
    assert stack.node_state() in ("pending", "running")
    set_state(stack, "stopped")
    assert router.handle(state_event(stack.instance_id, "stopped"))["action"] == "none"  # the wake was used up


def test_a_stop_with_no_waiting_job_stays_stopped(router: Router, stack: Stack) -> None:
    stack.redis.client().set(contract.WAKE, "1")  # a wake whose job was already served: the queue is empty
    set_state(stack, "stopped")
    assert router.handle(state_event(stack.instance_id, "stopped"))["action"] == "none"
    assert router.handle(state_event("i-someone-else", "stopped"))["action"] == "none"
    assert stack.node_state() == "stopped"


def test_handler_reads_its_configuration_from_the_environment(
    lambda_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, stack: Stack, signing_key: SigningKey
) -> None:
    setenv(monkeypatch, lambda_env)
    monkeypatch.setenv("TL_THROTTLE_BURST", "1")
    router_handler.reset()
    stack.beat()
    token = signing_key.token(sub="env")
    first = router_handler.handler(v2_event("POST", "/infer", body='{"prompt":"a"}', token=token), None)
    second = router_handler.handler(v2_event("POST", "/infer", body='{"prompt":"b"}', token=token), None)
    assert (first["statusCode"], second["statusCode"]) == (202, 429)
    router_handler.reset()


# ---------------------------------------------------------------- GET /status


def status(router: Router, token: str) -> dict[str, Any]:
    response = router.handle(v2_event("GET", "/status", token=token))
    assert response["statusCode"] == 200, response
    return body_of(response)


def test_status_says_the_node_state_the_queue_and_the_spend(
    router: Router, stack: Stack, signing_key: SigningKey
) -> None:
    token = signing_key.token()
    first = status(router, token)
    assert (first["node"], first["eta"], first["spend_eur"], first["budget_eur"]) == ("starting", 90, None, 20.0)
    stack.beat("busy")
    infer(router, token)
    copy = {"eur": 1.234, "amount": 1.43, "unit": "USD", "at": "2026-12-03T07:00:00+00:00"}  # as cost_publisher writes
    stack.s3().put_object(Bucket=BUCKET, Key="status/spend.json", Body=json.dumps(copy))
    busy = status(router, token)
    assert (busy["node"], busy["queue_depth"], busy["spend_eur"], busy["spend_at"]) == (
        "busy", 1, 1.234, "2026-12-03T07:00:00+00:00"
    )  # fmt: skip
    assert "eta" not in busy and busy["instance_type"] == "t3.small"
    set_state(stack, "stopped")
    asleep = status(router, token)
    assert (asleep["node"], asleep["queue_depth"]) == ("asleep", None)  # the queue sleeps with the node
    stack.ec2().create_tags(Resources=[stack.instance_id], Tags=[{"Key": HOLD_TAG, "Value": "budget-2026-12"}])
    assert status(router, token)["node"] == "held"


def test_status_without_a_token_is_401(router: Router) -> None:
    assert router.handle(v2_event("GET", "/status"))["statusCode"] == 401


def test_status_with_a_broken_spend_copy_still_answers(router: Router, stack: Stack, signing_key: SigningKey) -> None:
    stack.s3().put_object(Bucket=BUCKET, Key="status/spend.json", Body=b"not json")
    answer = status(router, signing_key.token())
    assert (answer["spend_eur"], answer["node"]) == (None, "starting")
