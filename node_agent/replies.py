"""Replies: the final JSON in S3 (written once), and the live partial text in Redis while a job runs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from jobqueue import contract

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PARTIAL_FLUSH_S: Final = 0.25
PARTIAL_FLUSH_CHARS: Final = 512


class ReplyWriteError(Exception):
    """S3 did not take the reply (unreachable, throttled, no permission); the caller retries."""


def build_reply(
    job_id: str,
    status: str,
    *,
    owner: str | None = None,
    output: str = "",
    model: str | None = None,
    usage: dict[str, int] | None = None,
    finish_reason: str | None = None,
    error: str | None = None,
    attempts: int = 0,
    created_at: float | None = None,
    claimed_at: float | None = None,
    ttft_s: float | None = None,
    started_at: float | None = None,
    finished_at: float,
) -> dict[str, Any]:
    """The reply document. Timings are in milliseconds: queued (created → claimed), ttft, total (claim → end)."""

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 1)

    return {
        "id": job_id,
        "status": status,
        "owner": owner,
        "output": output,
        "model": model,
        "usage": usage or {},
        "finish_reason": finish_reason,
        "error": error,
        "attempts": attempts,
        "timings": {
            "created_at": created_at,
            "claimed_at": claimed_at,
            "finished_at": finished_at,
            "queued_ms": ms(claimed_at - created_at) if claimed_at and created_at else None,
            "ttft_ms": ms(ttft_s),
            "total_ms": ms(finished_at - started_at) if started_at else None,
        },
    }


class ReplyStore:
    """Writes ``s3://<bucket>/replies/<id>.json`` with ``If-None-Match: *``: the first final reply wins."""

    def __init__(self, s3: S3Client, bucket: str, executor: Executor) -> None:
        self._s3 = s3
        self.bucket = bucket
        self._executor = executor

    async def write(self, reply: dict[str, Any]) -> dict[str, Any]:
        """Store the reply once; returns the reply that stands (an earlier one if another attempt won)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._write, reply)

    def _write(self, reply: dict[str, Any]) -> dict[str, Any]:
        key = contract.reply_object_key(reply["id"])
        body = json.dumps(reply, ensure_ascii=False).encode()
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "PreconditionFailed":
                return self._read(key)
            raise ReplyWriteError(f"s3://{self.bucket}/{key}: {code or exc}") from None
        except BotoCoreError as exc:
            raise ReplyWriteError(f"s3://{self.bucket}/{key}: {exc}") from None
        return reply

    def _read(self, key: str) -> dict[str, Any]:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise ReplyWriteError(f"s3://{self.bucket}/{key} exists but cannot be read: {exc}") from None
        return dict(json.loads(body))


class PartialText:
    """Batches streamed text into the ``reply:<id>`` Redis stream (every 250 ms or 512 characters)."""

    def __init__(self, append: Callable[[dict[str, str]], Awaitable[None]]) -> None:
        self._append = append
        self._buffer: list[str] = []
        self._size = 0
        self._last = time.monotonic()

    async def add(self, text: str) -> None:
        self._buffer.append(text)
        self._size += len(text)
        if self._size >= PARTIAL_FLUSH_CHARS or time.monotonic() - self._last >= PARTIAL_FLUSH_S:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            text, self._buffer, self._size = "".join(self._buffer), [], 0
            await self._append({"text": text})
        self._last = time.monotonic()
