"""A session's event stream: what the UI, the transports and metrics consume.

Events are small JSON-ready records with a monotonic timestamp; those of type `CLIENT_MESSAGE`
carry what a client of the session is sent. `EventBus.subscribe` gives each
consumer its own bounded queue; a consumer that falls behind loses its oldest events (and is
told how many), never slows the session down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, frozen=True)
class Event:
    type: str
    data: dict[str, Any] = field(default_factory=dict)
    t_ns: int = field(default_factory=time.monotonic_ns)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "t_ms": self.t_ns / 1e6, **self.data}


CLIENT_MESSAGE = "client_message"
"""The type of an event whose data is a message for the session's client (the wire protocol's
`state`, `transcript`, `turn_metrics`, `error`...): the session translates each event once
(`voice_agent.protocol.WireEvents`) and publishes what it makes beside it, for the transport,
metrics, the operators' feed and the terminal alike."""

_CLOSED = Event("closed")


class Subscription:
    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.lost = 0

    def _put(self, event: Event) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.lost += 1
        self._queue.put_nowait(event)

    def close(self) -> None:
        """End the iteration once what is queued has been read."""
        self._put(_CLOSED)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        while True:
            event = await self._queue.get()
            if event is _CLOSED:
                return
            yield event


class EventBus:
    """Fan-out of events to any number of bounded subscriptions."""

    def __init__(self, maxsize: int = 1024) -> None:
        self._maxsize = maxsize
        self._subs: list[Subscription] = []
        self.closed = False

    def subscribe(self) -> Subscription:
        sub = Subscription(self._maxsize)
        if self.closed:
            sub.close()
        else:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, event: Event) -> None:
        if not self.closed:
            for sub in self._subs:
                sub._put(event)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for sub in self._subs:
                sub.close()
            self._subs.clear()
