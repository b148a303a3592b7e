"""Parked requests (``jobqueue.inbox``) and the node: adopt them into the queue, park the queue back as it stops.

Adoption is exactly once: each parked job goes through the queue's ``enqueue`` script, which refuses a job that is
already queued, running or answered (its ``owner:<id>`` key exists), and the parked object is deleted only after
the enqueue succeeded or was refused as a duplicate. A crash in between leaves the object, and the next
adoption finds the duplicate and deletes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from typing import Final, TypeVar

from jobqueue import contract
from jobqueue.contract import JobError
from jobqueue.inbox import Inbox
from jobqueue.queue import AsyncJobQueue, EnqueueError

log = logging.getLogger("node_agent")
T = TypeVar("T")
ADOPT_EVERY_S: Final = 30.0
"""How often a serving node looks for parked jobs (one S3 LIST): parking happens while Redis is away, so this is
the upper bound on how long such a job waits once Redis is back."""


class Adopter:
    def __init__(self, inbox: Inbox, queue: AsyncJobQueue, executor: Executor) -> None:
        self.inbox = inbox
        self.queue = queue
        self._executor = executor

    async def _s3(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def waiting(self) -> bool:
        """Whether any request is parked (the node is not idle while one is)."""
        return await self._s3(lambda: self.inbox.count(1)) > 0

    async def adopt(self) -> int:
        """Move every parked job into the queue; returns how many were queued. S3 errors propagate (the caller
        tries again later); a full queue leaves the rest parked."""
        adopted = 0
        for job_id in await self._s3(lambda: list(self.inbox.job_ids())):
            try:
                parked = await self._s3(partial(self.inbox.get, job_id))
            except JobError as exc:
                await self._fail(job_id, f"invalid parked job: {exc}")
                continue
            if parked is None:
                continue  # adopted or expired meanwhile
            if await self._s3(partial(self.inbox.has_reply, job_id)):
                log.info("parked job already answered; removed", extra={"job_id": job_id})
            else:
                try:
                    await self.queue.enqueue(parked.job)
                except EnqueueError as exc:
                    if exc.code == "QUEUEFULL":
                        log.warning("queue full; the rest stays parked", extra={"error": str(exc)})
                        break
                    if exc.code != "DUPLICATE":
                        await self._fail(job_id, f"invalid parked job: {exc}")
                        continue
                    log.info("parked job was queued already; removed", extra={"job_id": job_id})
                else:
                    adopted += 1
                    log.info(
                        "parked job adopted",
                        extra={"job_id": job_id, "parked_s": round(parked.age_s(time.time()), 1)},
                    )
            await self._s3(partial(self.inbox.remove, job_id, parked.slot))
        return adopted

    async def park_back(self, count: int) -> int:
        """The node is stopping: move every unsettled job out of its queue into S3, where the router sees it and
        starts the node again. S3 first, then Redis: a crash between leaves a duplicate that adoption removes."""
        parked = 0
        for entry in await self.queue.entries(count):
            raw = await self.queue.job(entry.job_id)
            if raw is None:
                continue  # settled or expired: the entry is answered at the next start
            try:
                job = contract.decode(raw)
            except JobError:
                continue  # the next start answers it with a `failed` reply naming the field
            await self._s3(partial(self.inbox.put_back, job, "withdrawn from the queue as the node stopped"))
            await self.queue.withdraw(entry)
            parked += 1
        return parked

    async def _fail(self, job_id: str, error: str) -> None:
        log.warning("parked job not adoptable; answered failed", extra={"job_id": job_id, "error": error})
        reply = contract.build_reply(job_id, "failed", error=error, finished_at=time.time())
        await self._s3(lambda: self.inbox.write_reply(reply))
        await self._s3(lambda: self.inbox.remove(job_id, None))
