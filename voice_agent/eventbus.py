"""Fan-out of a session's events: what the UI, the transports and metrics consume.

`EventBus.subscribe` gives each consumer its own bounded queue; a consumer that falls behind
loses its oldest items (and is told how many), never slows the session down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")

_CLOSED = object()


class Subscription(Generic[T]):
    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[T | object] = asyncio.Queue(maxsize)
        self.lost = 0

    def _put(self, item: T | object) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.lost += 1
        self._queue.put_nowait(item)

    def close(self) -> None:
        """End the iteration once what is queued has been read."""
        self._put(_CLOSED)

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[T]:
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                return
            yield item  # type: ignore[misc]


class EventBus(Generic[T]):
    """Fan-out of items (a session's events) to any number of bounded subscriptions."""

    def __init__(self, maxsize: int = 1024) -> None:
        self._maxsize = maxsize
        self._subs: list[Subscription[T]] = []
        self.closed = False

    def subscribe(self) -> Subscription[T]:
        sub: Subscription[T] = Subscription(self._maxsize)
        if self.closed:
            sub.close()
        else:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription[T]) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, item: T) -> None:
        if not self.closed:
            for sub in self._subs:
                sub._put(item)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for sub in self._subs:
                sub.close()
            self._subs.clear()
