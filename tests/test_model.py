"""The agent with the real model server: llama.cpp's llama-server and a small Gemma 3 GGUF."""

from __future__ import annotations

import pytest

from devstack.procs import wait_until
from devstack.servers import MODEL_ALIAS, LlamaServer
from devstack.stack import Stack
from jobqueue import contract
from jobqueue.queue import partial_text

pytestmark = pytest.mark.slow

LONG_PROMPT = "Count from one to five hundred, separated by commas: one, two, three,"


def test_real_model_reply_has_text_usage_and_timings(stack: Stack, llama: LlamaServer) -> None:
    stack.start_agent(llama.url)
    job = stack.submit("The capital of France is", max_tokens=24, temperature=0.0)
    reply = stack.wait_reply(job["id"], 60)
    assert reply["status"] == "done", reply["error"]
    assert reply["output"].strip()
    assert reply["model"] == MODEL_ALIAS
    assert 0 < reply["usage"]["completion_tokens"] <= 24
    assert reply["usage"]["prompt_tokens"] > 0
    assert reply["finish_reason"] in ("length", "stop")
    assert 0 < reply["timings"]["ttft_ms"] < reply["timings"]["total_ms"]


def test_real_model_answers_a_chat_with_the_assistant_message(stack: Stack, llama: LlamaServer) -> None:
    # llama-server formats the messages with the chat template the GGUF carries (--jinja)
    stack.start_agent(llama.url)
    messages = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "What colour is the sky on a clear day?"},
    ]
    job = stack.submit(None, messages=messages, max_tokens=16, temperature=0.0, seed=1)
    reply = stack.wait_reply(job["id"], 60)
    assert reply["status"] == "done", reply["error"]
    assert reply["output"].strip()
    assert reply["message"] == {"role": "assistant", "content": reply["output"]}
    assert reply["finish_reason"] in ("length", "stop")
    assert 0 < reply["usage"]["completion_tokens"] <= 16
    live = stack.redis.client().xrange(contract.reply_stream_key(job["id"]))
    assert partial_text(live) == reply["output"]


def test_agent_waits_for_a_backend_that_starts_later(stack: Stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    late = LlamaServer(tmp_path / "late-llama")
    agent = stack.start_agent(late.url, wait=False)
    wait_until(lambda: "waiting for backend" in agent.log_path.read_text(), 15, "the agent to wait")
    assert (stack.queue().heartbeat() or {}).get("state") == "starting"
    late.start()
    try:
        stack.wait_agent_ready(agent, 60)
        job = stack.submit("Hello", max_tokens=8)
        assert stack.wait_reply(job["id"], 60)["status"] == "done"
    finally:
        late.stop()


def _kill_once_text_streams(stack: Stack, llama: LlamaServer, job_id: str) -> None:
    r = stack.redis.client()
    key = contract.reply_stream_key(job_id)
    wait_until(lambda: any("text" in f for _, f in r.xrange(key)), 60, "the first streamed text")
    llama.kill()  # the model server dies in the middle of the stream


def test_model_server_killed_mid_stream_is_retried_then_failed_after_max_attempts(
    stack: Stack, llama: LlamaServer
) -> None:
    stack.start_agent(llama.url, TL_MAX_ATTEMPTS="3")
    job = stack.submit(LONG_PROMPT, max_tokens=400, temperature=0.0)
    _kill_once_text_streams(stack, llama, job["id"])
    reply = stack.wait_reply(job["id"], 90)
    assert reply["status"] == "failed"
    assert reply["attempts"] == 3
    assert reply["error"].startswith("attempt 3 of 3: backend unreachable")
    assert stack.queue().depth() == 0


def test_model_server_killed_mid_stream_and_back_completes_the_job(stack: Stack, llama: LlamaServer) -> None:
    # Five attempts: on a loaded machine the model can still be loading ("503 Loading model") when the second
    # attempt has spent its backend retries, and that attempt is released for a third, as it should be.
    stack.start_agent(llama.url, TL_MAX_ATTEMPTS="5")
    job = stack.submit(LONG_PROMPT, max_tokens=48, temperature=0.0)
    _kill_once_text_streams(stack, llama, job["id"])
    llama.start()  # supervisor brings it back on the same port
    reply = stack.wait_reply(job["id"], 90)
    assert reply["status"] == "done", reply
    assert 2 <= reply["attempts"] < 5, reply  # the killed attempt was one of them, and the budget was not used up
    events = [f for _, f in stack.redis.client().xrange(contract.reply_stream_key(job["id"]))]
    assert {"attempt": "2"} in events  # a watcher can tell that the text restarted
