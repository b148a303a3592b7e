"""Replies: the final JSON in S3 (written once), and the live partial text in Redis while a job runs.

What a reply holds is part of the job contract (``jobqueue.contract.build_reply``): the functions write one too,
for a parked job that no node adopted in time.
"""

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
