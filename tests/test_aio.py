"""``unless_set``: the agent's one way to cut work short when it is told to stop (Redis away, the model server not
up yet)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from node_agent.aio import Interrupted, unless_set

T = TypeVar("T")


def run_with_event(body: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``body`` with a fresh event on a new event loop (an event belongs to the loop it is used on)."""

    async def main() -> T:
        return await body(asyncio.Event())

    return asyncio.run(main())


def test_the_work_s_result_comes_back_when_it_ends_first() -> None:
    async def body(event: asyncio.Event) -> int:
        async def work() -> int:
            await asyncio.sleep(0.01)
            return 7

        return await unless_set(event, work())

    assert run_with_event(body) == 7


def test_the_work_s_error_is_raised_as_it_is() -> None:
    async def body(event: asyncio.Event) -> None:
        async def work() -> None:
            raise ValueError("backend said no")

        await unless_set(event, work())

    with pytest.raises(ValueError, match="backend said no"):
        run_with_event(body)


def test_the_event_interrupts_the_work_and_the_work_has_finished_when_it_returns() -> None:
    seen: list[str] = []

    async def body(event: asyncio.Event) -> None:
        async def work() -> None:
            try:
                await asyncio.sleep(30)
            finally:
                seen.append("work cleaned up")

        asyncio.get_running_loop().call_later(0.01, event.set)
        with pytest.raises(Interrupted):
            await unless_set(event, work())
        seen.append("unless_set returned")

    run_with_event(body)
    assert seen == ["work cleaned up", "unless_set returned"]


def test_an_event_already_set_interrupts_before_the_work_runs_on() -> None:
    async def body(event: asyncio.Event) -> None:
        event.set()

        async def work() -> None:
            await asyncio.sleep(30)

        await unless_set(event, work())

    with pytest.raises(Interrupted):
        run_with_event(body)


def test_work_that_ends_as_the_event_is_set_counts_as_ended() -> None:
    async def body(event: asyncio.Event) -> str:
        async def work() -> str:
            event.set()
            return "done"

        return await unless_set(event, work())

    assert run_with_event(body) == "done"
