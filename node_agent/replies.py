"""Replies: the final JSON in S3 (written once), and the live partial text in Redis while a job runs.

What a reply holds is part of the job contract (``jobqueue.contract.build_reply``): the functions write one too,
for a parked job that no node adopted in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, Final

from jobqueue import contract
from node_agent.s3 import S3Error, SignedS3

PARTIAL_FLUSH_S: Final = 0.25
PARTIAL_FLUSH_CHARS: Final = 512


class ReplyWriteError(Exception):
    """S3 did not take the reply (unreachable, throttled, no permission); the caller retries."""


class ReplyStore:
    """Writes ``s3://<bucket>/replies/<id>.json`` with ``If-None-Match: *``: the first final reply wins."""

    def __init__(self, s3: SignedS3) -> None:
        self._s3 = s3

    async def write(self, reply: dict[str, Any]) -> dict[str, Any]:
        """Store the reply once; returns the reply that stands (an earlier one if another attempt won)."""
        key = contract.reply_object_key(reply["id"])
        body = json.dumps(reply, ensure_ascii=False).encode()
        try:
            await self._s3.put(key, body, {"Content-Type": "application/json", "If-None-Match": "*"})
        except S3Error as exc:
            if exc.status == HTTPStatus.PRECONDITION_FAILED:
                return await self._read(key)
            raise ReplyWriteError(str(exc)) from None
        return reply

    async def _read(self, key: str) -> dict[str, Any]:
        try:
            body = await self._s3.get(key)
        except S3Error as exc:
            raise ReplyWriteError(f"{exc} (the reply exists but cannot be read)") from None
        return dict(json.loads(body))

    async def aclose(self) -> None:
        await self._s3.aclose()


class LiveText:
    """The live text of every running job, written to Redis together.

    Each job's streamed text is buffered; every 250 ms (sooner once a job holds 512 characters) one call
    carries what every job streamed since, instead of a round trip per job: at 32 jobs that is 4 writes a second,
    not 128. A job's tail goes with the call that settles it, before its final status. Writes are one at a time,
    so a job's text reaches its stream in order. Live text is best effort: a Redis hiccup loses
    a batch of it for the followers, never a job (the reply in S3 holds the whole text)."""

    def __init__(self, write: Callable[[dict[str, str]], Awaitable[None]]) -> None:
        self._write = write
        self._pending: dict[str, list[str]] = {}
        self._sizes: dict[str, int] = {}
        self._full = asyncio.Event()
        self._writing = asyncio.Lock()

    def add(self, job_id: str, text: str) -> None:
        self._pending.setdefault(job_id, []).append(text)
        size = self._sizes[job_id] = self._sizes.get(job_id, 0) + len(text)
        if size >= PARTIAL_FLUSH_CHARS:
            self._full.set()

    def discard(self, job_id: str) -> None:
        """Forget a job's unwritten text (its attempt failed: the next one starts the stream again)."""
        self._pending.pop(job_id, None)
        self._sizes.pop(job_id, None)

    async def flush(self) -> None:
        """Write what every job streamed since the last write, in one call."""
        async with self._writing:
            pending, self._pending, self._sizes = self._pending, {}, {}
            if pending:
                await self._write({job: "".join(parts) for job, parts in pending.items()})

    async def take(self, job_id: str) -> str:
        """A finished job's text not written yet, for the call that settles it (``finish`` writes it before the
        status). It waits for a write in flight, so the job's earlier text is in its stream first."""
        async with self._writing:
            self._sizes.pop(job_id, None)
            return "".join(self._pending.pop(job_id, ()))

    async def loop(self) -> None:
        """Flush every 250 ms, or once a job's text reaches 512 characters; until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PARTIAL_FLUSH_S):
                    await self._full.wait()
            self._full.clear()
            await self.flush()
