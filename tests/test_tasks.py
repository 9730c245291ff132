"""Task ownership: an owner's tasks end when it says so, even one that swallows a cancel."""

from __future__ import annotations

import asyncio

from voice_agent.tasks import TaskOwner, cancel_and_wait


async def _stubborn(swallowed: list[int]) -> None:
    """Goes on after its first cancellation (as Python 3.11's wait_for sometimes does)."""
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            if not swallowed:
                swallowed.append(1)
                continue
            raise


async def test_a_task_that_swallows_a_cancel_is_cancelled_again() -> None:
    owner = TaskOwner("owner")
    swallowed: list[int] = []
    owner.create_task(_stubborn(swallowed), "stubborn")
    await asyncio.sleep(0)
    await asyncio.wait_for(owner.cancel_tasks(), 5)
    assert swallowed == [1] and not owner.tasks


async def test_cancel_and_wait_does_the_same_for_one_task() -> None:
    swallowed: list[int] = []
    task = asyncio.ensure_future(_stubborn(swallowed))
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert swallowed == [1] and task.cancelled()
