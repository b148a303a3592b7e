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
    contract.new_job("é" * (contract.MAX_PROMPT_BYTES // 2), "u")  # exactly 6,144 bytes
    with pytest.raises(JobError, match="prompt: must be at most 6144 bytes"):
        contract.new_job("é" * (contract.MAX_PROMPT_BYTES // 2 + 1), "u")


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
