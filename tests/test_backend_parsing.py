"""What the agent reads from the model server: load metrics and streamed chunks."""

from __future__ import annotations

import pytest

from node_agent.backend import BackendError, Load, parse_chunk, parse_load

VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 1.0
"""
LLAMA = "llamacpp:requests_processing 0\nllamacpp:requests_deferred 3\n"


def test_vllm_load_is_read_from_its_metric_names() -> None:
    assert parse_load(VLLM) == Load(running=2, waiting=1)


def test_llama_cpp_load_is_read_from_its_metric_names() -> None:
    load = parse_load(LLAMA)
    assert load == Load(running=0, waiting=3)
    assert load.busy


def test_server_without_load_metrics_is_unknown() -> None:
    assert parse_load("process_cpu_seconds_total 12\n") is None


def test_error_object_after_http_200_raises_with_its_message() -> None:
    with pytest.raises(BackendError, match="engine died") as caught:
        parse_chunk('{"error": {"message": "engine died", "type": "InternalServerError"}}')
    assert caught.value.retryable


@pytest.mark.parametrize("data", ["{broken", "[1, 2]"])
def test_malformed_chunk_is_a_retryable_error(data: str) -> None:
    with pytest.raises(BackendError) as caught:
        parse_chunk(data)
    assert caught.value.retryable


def test_text_chunk_passes_through() -> None:
    assert parse_chunk('{"choices": [{"text": "hi"}]}')["choices"][0]["text"] == "hi"
