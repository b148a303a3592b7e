"""The job contract: what a valid job is, and a clear reason for every invalid one."""

from __future__ import annotations

import json
import uuid

import pytest

from jobqueue import contract
from jobqueue.contract import JobError


def test_new_job_holds_every_field_of_the_contract() -> None:
    job = contract.new_job("hello", "user-1", idle_minutes=12, max_tokens=64, temperature=0.2, now=1000.0)
    assert uuid.UUID(job["id"]).version == 4
    assert job["reply_key"] == f"replies/{job['id']}.json"
    assert (job["prompt"], job["owner"], job["idle_minutes"], job["created_at"]) == ("hello", "user-1", 12, 1000.0)
    assert (job["max_tokens"], job["temperature"]) == (64, 0.2)
    assert contract.decode(contract.encode(job)) == job


def test_optional_generation_parameters_are_left_out_when_not_given() -> None:
    job = contract.new_job("hello", "user-1")
    assert "max_tokens" not in job
    assert "temperature" not in job
    assert job["idle_minutes"] == contract.DEFAULT_IDLE_MINUTES


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"idle_minutes": 0}, "idle_minutes"),
        ({"idle_minutes": 31}, "idle_minutes"),
        ({"idle_minutes": 2.5}, "idle_minutes"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "12"}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": 12}, "prompt"),
        ({"owner": ""}, "owner"),
        ({"id": "not-a-uuid"}, "id"),
        ({"id": str(uuid.uuid1())}, "id"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"v": 2}, "v"),
        ({"colour": "blue"}, "job"),
    ],
)
def test_invalid_field_is_named_in_the_error(change: dict[str, object], field: str) -> None:
    job = dict(contract.new_job("hello", "user-1"))
    job.update(change)
    with pytest.raises(JobError, match=rf"^{field}: "):
        contract.validate(job)


@pytest.mark.parametrize("missing", ["id", "prompt", "idle_minutes", "reply_key", "created_at", "owner"])
def test_missing_required_field_is_an_error(missing: str) -> None:
    job = dict(contract.new_job("hello", "user-1"))
    del job[missing]
    with pytest.raises(JobError, match=missing):
        contract.validate(job)


def test_prompt_limit_counts_utf8_bytes_not_characters() -> None:
    contract.new_job("é" * (contract.MAX_INPUT_BYTES // 2), "u")  # exactly 6,144 bytes
    with pytest.raises(JobError, match="prompt: must be at most 6144 bytes"):
        contract.new_job("é" * (contract.MAX_INPUT_BYTES // 2 + 1), "u")


def test_reply_key_must_belong_to_the_job() -> None:
    job = dict(contract.new_job("hello", "user-1"))
    job["reply_key"] = f"replies/{uuid.uuid4()}.json"
    with pytest.raises(JobError, match="reply_key: must be replies/"):
        contract.validate(job)


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"[1, 2]", b"null"])
def test_decode_rejects_what_is_not_a_job_object(raw: bytes) -> None:
    with pytest.raises(JobError):
        contract.decode(raw)


def test_schema_is_plain_json_for_other_tools() -> None:
    assert json.loads(json.dumps(contract.JOB_SCHEMA))["additionalProperties"] is False


CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]


def test_a_chat_job_carries_messages_and_the_sampling_fields() -> None:
    job = contract.new_job(None, "u", messages=CHAT, top_p=0.9, stop=["\n\n", "User:"], seed=7, temperature=0.0)
    assert contract.is_chat(job) and "prompt" not in job
    assert (job["messages"], job["top_p"], job["stop"], job["seed"]) == (CHAT, 0.9, ["\n\n", "User:"], 7)
    assert contract.decode(contract.encode(job)) == job
    assert not contract.is_chat(contract.new_job("hello", "u"))


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"prompt": "also"}, "prompt", "give either prompt or messages, not both"),
        ({"messages": []}, "messages", "must contain at least 1 items"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "must be one of"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content", "must be string"),
        ({"messages": [{"role": "user"}]}, "messages[0]", "must contain ['content']"),
        ({"messages": [{"role": "user", "content": "x", "name": "n"}]}, "messages[0]", "must not contain"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages", "has no text"),
        ({"messages": [{"role": "user", "content": "\ud800"}]}, "messages[0].content", "not valid Unicode text"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "must contain less than or equal to 4 items"),
        ({"stop": [""]}, "stop[0]", "must be longer than or equal to 1 characters"),
        ({"top_p": 0}, "top_p", "must be bigger than 0"),
        ({"top_p": 1.5}, "top_p", "must be smaller than or equal to 1"),
        ({"seed": -1}, "seed", "must be bigger than or equal to 0"),
        ({"seed": 2**32}, "seed", "must be smaller than or equal to"),
    ],
)
def test_a_bad_chat_job_names_the_field(change: dict[str, object], field: str, reason: str) -> None:
    job = dict(contract.new_job(None, "u", messages=CHAT))
    job.update(change)
    with pytest.raises(JobError) as caught:
        contract.validate(job)
    assert (caught.value.field, caught.value.reason.startswith(reason)) == (field, True), str(caught.value)


def test_a_job_without_prompt_or_messages_says_so() -> None:
    job = dict(contract.new_job("hello", "u"))
    del job["prompt"]
    with pytest.raises(JobError, match=r"^prompt: give either prompt or messages$"):
        contract.validate(job)


def test_the_byte_cap_counts_every_messages_content() -> None:
    half = "é" * (contract.MAX_INPUT_BYTES // 4)  # 3,072 bytes
    contract.new_job(None, "u", messages=[{"role": "user", "content": half}, {"role": "assistant", "content": half}])
    with pytest.raises(JobError, match=r"^messages: must be at most 6144 bytes of UTF-8 in all, got 6146"):
        contract.new_job(
            None, "u", messages=[{"role": "user", "content": half}, {"role": "user", "content": half + "é"}]
        )
