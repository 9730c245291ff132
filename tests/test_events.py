"""A session's event stream: bounded per consumer, never slowing the session down."""

from __future__ import annotations

import asyncio

from voice_agent.events import Event, EventBus


async def collect(sub: object) -> list[str]:
    return [e.type async for e in sub]  # type: ignore[attr-defined]


async def test_each_subscriber_gets_every_event_until_the_bus_closes() -> None:
    bus = EventBus()
    a, b = bus.subscribe(), bus.subscribe()
    bus.publish(Event("one"))
    bus.publish(Event("two"))
    bus.close()
    bus.publish(Event("after close"))
    assert await asyncio.wait_for(collect(a), 1) == ["one", "two"]
    assert await asyncio.wait_for(collect(b), 1) == ["one", "two"]
    assert await asyncio.wait_for(collect(bus.subscribe()), 1) == []  # late subscribers end at once


async def test_a_slow_subscriber_loses_its_oldest_events_and_is_told_how_many() -> None:
    bus = EventBus(maxsize=3)
    sub = bus.subscribe()
    for i in range(5):
        bus.publish(Event(f"e{i}"))
    assert sub.lost == 2
    bus.close()
    assert await asyncio.wait_for(collect(sub), 1) == ["e3", "e4"]  # e2 made room for the end
    assert sub.lost == 3


async def test_unsubscribed_consumers_get_nothing_more() -> None:
    bus = EventBus()
    gone, stays = bus.subscribe(), bus.subscribe()
    bus.unsubscribe(gone)
    bus.publish(Event("x"))
    bus.close()
    assert await asyncio.wait_for(collect(stays), 1) == ["x"]
    assert gone.lost == 0 and gone._queue.empty()


def test_events_serialise_with_their_time() -> None:
    e = Event("turn", {"ms": 12}, t_ns=1_500_000)
    assert e.to_json() == {"type": "turn", "t_ms": 1.5, "ms": 12}
