"""``tl serve`` driven by the official ``openai`` package: the local edge (router, moto's Cognito, Redis), the agent,
and the real small model (llama-server) or the stand-in where a test needs the timing under control."""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from devstack.edge import LocalEdgeServer, UserPool, create_user
from devstack.procs import clean_env, wait_until
from devstack.servers import AWS_REGION, LlamaServer
from devstack.stack import Stack, StandInServer
from jobqueue import contract
from tests.support import PASSWORD
from tlcli.api import Api
from tlcli.serve import Door
from tlcli.tokens import Session, Tokens, load_tokens, password_login, save_token

pytestmark = pytest.mark.slow

_users = itertools.count()


@pytest.fixture
def user(shared_stack: Stack, pool: UserPool) -> str:
    """A user of their own for each test: the throttle (5 at once, per user) is not shared between tests."""
    name = f"serve-{next(_users)}"
    create_user(shared_stack, pool, name, PASSWORD)
    return name


@pytest.fixture
def token_file(shared_stack: Stack, pool: UserPool, user: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AWS_ENDPOINT_URL", shared_stack.moto.url)  # Cognito, for the renewal
    path = tmp_path / "token.json"
    save_token(password_login(pool.client_id, user, PASSWORD, region=AWS_REGION), path)
    return path


@pytest.fixture
def door(edge: LocalEdgeServer, token_file: Path, shared_stack: Stack) -> Iterator[Door]:
    shared_stack.redis.client().flushall()  # no heartbeat, no job or throttle left by another test
    served = Door(Api(edge.url, Session(token_file)), 0, wait_s=60, poll_s=0.1, keepalive_s=0.3).start()
    yield served
    served.stop()
    shared_stack.stop_agents()


def client(door: Door) -> openai.OpenAI:
    # any key: the door is the user's own; no retries, so that a refusal is seen as it is
    return openai.OpenAI(base_url=f"{door.url}/v1", api_key="anything", max_retries=0, timeout=90)


def serving(stack: Stack, backend: str) -> None:
    stack.ec2().start_instances(InstanceIds=[stack.instance_id])
    stack.start_agent(backend)


CHAT = [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Name a colour."}]


def test_models_lists_the_one_model(door: Door) -> None:
    assert [m.id for m in client(door).models.list()] == ["tinyllama-shape"]


def test_chat_and_completion_with_the_real_model_streaming_and_not(
    door: Door, shared_stack: Stack, llama: LlamaServer
) -> None:
    serving(shared_stack, llama.url)
    ai = client(door)
    chat = ai.chat.completions.create(model="any", messages=CHAT, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    assert chat.object == "chat.completion" and chat.model == "gemma3-270m"
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content
    assert chat.choices[0].finish_reason in ("stop", "length")
    assert 0 < chat.usage.completion_tokens <= 12 if chat.usage else False

    stream = ai.completions.create(model="any", prompt="The capital of France is", max_tokens=12, stream=True,
                                   temperature=0, stream_options={"include_usage": True})  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.strip()
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (
        ["length"], ["stop"]
    )  # fmt: skip
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    chat_stream = ai.chat.completions.create(model="any", messages=CHAT, max_tokens=12, stream=True)  # type: ignore[arg-type]
    deltas = list(chat_stream)
    assert deltas[0].choices[0].delta.role == "assistant"
    assert "".join(d.choices[0].delta.content or "" for d in deltas).strip()
    assert completion_text_is_the_reply(ai, shared_stack)


def completion_text_is_the_reply(ai: openai.OpenAI, stack: Stack) -> bool:
    """The non-streamed completion is the reply the agent wrote to S3, word for word."""
    done = ai.completions.create(model="any", prompt="One, two,", max_tokens=8, temperature=0)
    job_id = done.id.removeprefix("cmpl-")
    return (stack.reply(job_id) or {}).get("output") == done.choices[0].text


def test_a_stream_to_a_sleeping_node_gets_200_at_once_then_waits_for_the_cold_boot(
    door: Door, shared_stack: Stack, standin: StandInServer
) -> None:
    shared_stack.ec2().stop_instances(InstanceIds=[shared_stack.instance_id])
    shared_stack.ec2().get_waiter("instance_stopped").wait(InstanceIds=[shared_stack.instance_id])
    started = time.monotonic()
    stream = client(door).chat.completions.create(model="any", messages=CHAT, max_tokens=8, stream=True)  # type: ignore[arg-type]
    chunks = iter(stream)
    first = next(chunks)
    assert time.monotonic() - started < 10 and first.choices[0].delta.role == "assistant"
    wait_until(lambda: shared_stack.node_state() == "running", 30, "the router to start the node")
    shared_stack.start_agent(standin.url)  # the node boots: its agent comes up and takes the job
    rest = list(chunks)
    assert "".join(c.choices[0].delta.content or "" for c in rest) == "".join(f" tok{i}" for i in range(8))
    assert rest[-1].choices[0].finish_reason == "length"


def test_the_wait_is_kept_alive_with_the_node_state_and_the_seconds_left(door: Door, shared_stack: Stack) -> None:
    shared_stack.ec2().stop_instances(InstanceIds=[shared_stack.instance_id])
    shared_stack.ec2().get_waiter("instance_stopped").wait(InstanceIds=[shared_stack.instance_id])
    body = {"model": "x", "messages": CHAT, "stream": True}
    comments: list[str] = []
    with httpx.stream("POST", f"{door.url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        assert "access-control-allow-origin" not in response.headers
        for line in response.iter_lines():
            if line.startswith(":"):
                comments.append(line)
            if len(comments) == 3:
                break
    assert all(c.startswith(": starting, about ") and c.endswith(" s left") for c in comments), comments
    left = [int(c.split("about ")[1].split(" ")[0]) for c in comments]
    assert left == sorted(left, reverse=True) and 0 < left[-1] <= 90, left  # counts down from the router's eta


def test_a_request_without_stream_waits_up_to_its_limit_then_is_504_with_the_reason(
    edge: LocalEdgeServer, token_file: Path, shared_stack: Stack
) -> None:
    shared_stack.ec2().stop_instances(InstanceIds=[shared_stack.instance_id])
    shared_stack.redis.client().delete(contract.HEARTBEAT)
    short = Door(Api(edge.url, Session(token_file)), 0, wait_s=1.5, poll_s=0.1).start()
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            client(short).chat.completions.create(model="any", messages=CHAT)  # type: ignore[arg-type]
    finally:
        short.stop()
    assert caught.value.status_code == 504
    assert "no answer within 2 s" in caught.value.message and "tl result" in caught.value.message


def test_a_bad_request_is_400_naming_the_parameter_and_sends_nothing(door: Door, shared_stack: Stack) -> None:
    ai = client(door)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),  # refused here
        ({"messages": CHAT, "n": 2}, "n"),  # would give less than asked
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0]",
        ),
        ({"messages": CHAT, "max_tokens": 5000}, "max_tokens"),  # refused by the API, its field kept
        ({"messages": CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": [{"role": "user", "content": "é" * 3100}]}, "messages"),  # over 6,144 bytes
    ]
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            ai.chat.completions.create(model="any", **body)
        error = caught.value.body
        assert isinstance(error, dict) and error["param"] == param, (body, error)
        assert error["type"] == "invalid_request_error" and error["message"].startswith(f"{param}: ")
    assert shared_stack.queue().depth() == 0


def test_a_429_keeps_its_retry_after(door: Door, edge: LocalEdgeServer, token_file: Path, shared_stack: Stack) -> None:
    headers = {"authorization": f"Bearer {load_tokens(token_file).id_token}"}
    for _ in range(5):  # the user's bucket: 5 at once
        assert httpx.post(f"{edge.url}/infer", json={"prompt": "x"}, headers=headers).status_code == 202
    with pytest.raises(openai.RateLimitError) as caught:
        client(door).chat.completions.create(model="any", messages=CHAT)  # type: ignore[arg-type]
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert caught.value.code == "rate_limit_exceeded"


def test_a_failed_job_is_an_error_with_its_reason_streaming_and_not(
    door: Door, shared_stack: Stack, standin: StandInServer
) -> None:
    shared_stack.ec2().start_instances(InstanceIds=[shared_stack.instance_id])
    shared_stack.start_agent(standin.url, TL_MAX_ATTEMPTS="1")
    poisoned = [{"role": "user", "content": "[[error-chunk]]"}]  # the stand-in fails it mid-stream
    ai = client(door)
    with pytest.raises(openai.APIStatusError) as whole:
        ai.chat.completions.create(model="any", messages=poisoned)  # type: ignore[arg-type]
    assert whole.value.status_code == 502 and "the job failed: attempt 1 of 1" in whole.value.message
    with pytest.raises(openai.APIError, match="the job failed: attempt 1 of 1"):
        list(ai.chat.completions.create(model="any", messages=poisoned, stream=True))  # type: ignore[arg-type]


def expired_copy(id_token: str) -> str:
    """The same claims with ``exp`` in the past (unsigned: only ``tl`` reads it, to know it must renew)."""
    head, payload, _ = id_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] = int(time.time()) - 10
    return f"{head}.{base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b'=').decode()}.c2ln"


def test_an_expired_id_token_is_renewed_with_the_refresh_token(
    door: Door, token_file: Path, shared_stack: Stack, standin: StandInServer
) -> None:
    serving(shared_stack, standin.url)
    kept = load_tokens(token_file)
    assert kept.refresh_token and kept.client_id
    save_token(Tokens(expired_copy(kept.id_token), kept.refresh_token, kept.client_id), token_file)
    door.api.auth = Session(token_file)  # as a tl serve started now, with an hour-old login
    reply = client(door).chat.completions.create(model="any", messages=CHAT)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    renewed = load_tokens(token_file)
    assert renewed.id_token not in (kept.id_token, expired_copy(kept.id_token)) and renewed.id_token.count(".") == 2
    assert renewed.refresh_token == kept.refresh_token
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"


def test_a_refresh_that_fails_says_run_tl_login(door: Door, token_file: Path) -> None:
    kept = load_tokens(token_file)
    save_token(Tokens(expired_copy(kept.id_token), "revoked-or-made-up", kept.client_id), token_file)
    door.api.auth = Session(token_file)
    with pytest.raises(openai.AuthenticationError) as caught:
        client(door).chat.completions.create(model="any", messages=CHAT)  # type: ignore[arg-type]
    assert "run `tl login`" in caught.value.message


def test_a_forged_host_and_cross_origin_requests_are_refused(door: Door, shared_stack: Stack) -> None:
    body = {"model": "x", "messages": CHAT}
    url = f"{door.url}/v1/chat/completions"
    # DNS rebinding: a hostile name that resolves to 127.0.0.1 arrives with its own Host
    rebound = httpx.post(url, json=body, headers={"Host": f"evil.example:{door.port}"})
    assert (rebound.status_code, rebound.json()["error"]["code"]) == (403, "forbidden_host")
    assert httpx.get(f"{door.url}/v1/models", headers={"Host": "localhost:1"}).status_code == 403
    # a page on another site posting to localhost: the simple request is refused, the preflight never granted
    page = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
    crossed = httpx.post(url, content=json.dumps(body), headers=page)
    assert (crossed.status_code, crossed.json()["error"]["code"]) == (403, "cross_origin")
    preflight = httpx.options(url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    # the door's own origin, from a browser, without the key of this start: refused too
    own = httpx.post(url, json=body, headers={"Origin": door.url, "Sec-Fetch-Site": "same-origin"})
    assert (own.status_code, own.json()["error"]["code"]) == (403, "no_key")
    assert shared_stack.queue().depth() == 0  # nothing of these went on


def test_the_door_listens_on_loopback_only(door: Door) -> None:
    assert door.server.server_address[0] == "127.0.0.1"
    addresses = {line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]}
    assert f"0100007F:{door.port:04X}" in addresses
    assert f"00000000:{door.port:04X}" not in addresses


def test_tl_serve_refuses_to_start_without_a_login(edge: LocalEdgeServer, tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415

    from devstack.procs import venv_tool  # noqa: PLC0415

    env = clean_env()
    env.update(TL_API_URL=edge.url, TL_TOKEN_FILE=str(tmp_path / "none.json"))
    done = subprocess.run([venv_tool("tl"), "serve", "--port", "0"], env=env, capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip
    assert done.returncode == 2 and "run `tl login`" in done.stderr
