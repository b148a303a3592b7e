"""The asyncio helpers the agent's parts share: bounded task shutdown, a timed event wait, work cut short by an
event, and the retry of a transient failure (Redis or S3 away) that a job's bookkeeping must outlast."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, TypeVar

import redis.exceptions
from botocore.exceptions import BotoCoreError, ClientError

from node_agent.replies import ReplyWriteError

log = logging.getLogger("node_agent")
T = TypeVar("T")

RETRY_MAX_S: Final = 30.0
TRANSIENT: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ReplyWriteError)
AWS_ERRORS: Final = (ClientError, BotoCoreError)


async def stop_tasks(tasks: list[asyncio.Task[None]], timeout_s: float = 5.0) -> None:
    """Cancel background loops and wait for them, boundedly. The loops also end on the shutdown flag, so a
    client library that swallows a cancellation (redis-py 8.0/8.1's asyncio client did) cannot keep the agent
    alive."""
    for task in tasks:
        task.cancel()
    _, stuck = await asyncio.wait(tasks, timeout=timeout_s)
    for task in stuck:
        log.warning("background task did not stop; leaving it", extra={"task": task.get_name()})


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for an event at most ``timeout_s``. ``asyncio.timeout`` rather than ``asyncio.wait_for``: on
    Python 3.11, ``wait_for`` may drop a cancellation that arrives just as the awaited future completes."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


class Interrupted(Exception):
    """The event was set before the work ended; the work was cancelled, and has finished."""


async def unless_set(event: asyncio.Event, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` until it ends or ``event`` is set, whichever comes first: the work's result (or its error), or
    ``Interrupted`` when the event cut it short. The work's task is waited for either way, so nothing is left
    running; a work that ends as the event is set counts as ended."""
    task = asyncio.create_task(work)
    stop = asyncio.create_task(event.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        raise Interrupted
    return task.result()


async def retry(what: str, call: Callable[[], Awaitable[T]]) -> T:
    """Retry a transient failure (Redis or S3 away) with capped exponential back-off, until it works."""
    delay = 0.25
    while True:
        try:
            return await call()
        except TRANSIENT as exc:
            log.warning(f"cannot {what}; retrying", extra={"error": str(exc), "retry_in_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
