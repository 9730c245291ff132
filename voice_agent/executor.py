"""The bounded pool where engines run, so that the event loop never runs inference.

Engines are synchronous; stages call them through `EngineExecutor.run` (one call) or
`EngineExecutor.stream` (a synchronous iterator, one `next()` per call, so a cancelled stream
stops between items and its generator is closed). Calls beyond `max_pending` are refused with
`BusyError` at once rather than queued behind everyone else; a call that runs past
`call_timeout_s` raises `TimeoutError` in the caller (the thread finishes on its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


class BusyError(RuntimeError):
    """Too many engine calls are waiting; the caller should answer 'busy'."""


class EngineExecutor:
    """A thread pool with a bound on waiting calls and a timeout on each call."""

    def __init__(
        self, workers: int = 2, max_pending: int = 64, call_timeout_s: float = 20.0
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine")
        self.max_pending = max_pending
        self.call_timeout_s = call_timeout_s
        self.pending = 0

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = None) -> T:
        """Run `fn(*args)` in the pool and return its result."""
        if self.pending >= self.max_pending:
            raise BusyError(f"{self.pending} engine calls already waiting")
        self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(self._pool, functools.partial(fn, *args))
            return await asyncio.wait_for(fut, timeout_s or self.call_timeout_s)
        finally:
            self.pending -= 1

    async def stream(self, it: Iterator[T], *, timeout_s: float | None = None) -> AsyncIterator[T]:
        """Iterate a synchronous iterator in the pool, one item per call.

        However the iteration ends (exhausted, cancelled, failed), the iterator is closed in the
        pool once any `next()` still running there has returned, so a generator's clean-up runs
        and nothing waits for it.
        """
        lock = threading.Lock()

        def step() -> object:
            with lock:
                return next(it, _END)

        def close() -> None:
            with lock, contextlib.suppress(Exception):
                getattr(it, "close", lambda: None)()

        try:
            while True:
                item = await self.run(step, timeout_s=timeout_s)
                if item is _END:
                    return
                yield item  # type: ignore[misc]
        finally:
            self._pool.submit(close)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
