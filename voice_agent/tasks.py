"""Task ownership: every background task has an owner that cancels and awaits it.

`TaskOwner.create_task` is the one place in voice-agent that starts an asyncio task; nothing
else calls `asyncio.create_task`. An owner's `cancel_tasks` cancels them all and waits until
each has really finished, so no task outlives the stage or session that started it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class TaskOwner:
    """Mixin: owns the tasks it starts."""

    name: str

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def create_task(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Start `coro` as a task owned by this object; its failure is logged, never lost."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    async def cancel_tasks(self) -> None:
        """Cancel every owned task and wait until all have finished (one that goes on after a
        cancellation, which a library may swallow, is cancelled again each second)."""
        while self._tasks:
            pending = list(self._tasks)
            await _cancel_all(pending)
            self._tasks.difference_update(pending)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel one task and wait for it to finish (no error if it already has)."""
    if task is None or task.done():
        return
    await _cancel_all([task])


RECANCEL_AFTER_S = 1.0


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait until every one has finished. Python 3.11's `asyncio.wait_for`
    (in our code or a library's) can swallow a cancellation that lands as what it awaits
    completes: a task that goes on after one is told again, rather than waited for forever."""
    waiting = [t for t in tasks if not t.done()]
    while waiting:
        for t in waiting:
            t.cancel()
        _, still = await asyncio.wait(waiting, timeout=RECANCEL_AFTER_S)
        if still:
            names = ", ".join(sorted(t.get_name() for t in still))
            log.warning("tasks still running %.0f s after a cancel: %s", RECANCEL_AFTER_S, names)
        waiting = list(still)
    await asyncio.gather(*tasks, return_exceptions=True)  # (their outcomes, retrieved)
