"""A session's event stream: bounded per consumer, never slowing the session down."""

from __future__ import annotations

import asyncio

from voice_agent.eventbus import EventBus, Subscription


async def collect(sub: Subscription[str]) -> list[str]:
    async with asyncio.timeout(1):
        return [item async for item in sub]


async def test_each_subscriber_gets_every_item_until_the_bus_closes() -> None:
    bus: EventBus[str] = EventBus()
    a, b = bus.subscribe(), bus.subscribe()
    bus.publish("one")
    bus.publish("two")
    bus.close()
    bus.publish("after close")
    assert await collect(a) == ["one", "two"]
    assert await collect(b) == ["one", "two"]
    assert await collect(bus.subscribe()) == []  # late subscribers end at once


async def test_a_slow_subscriber_loses_its_oldest_items_and_is_told_how_many() -> None:
    bus: EventBus[str] = EventBus(maxsize=3)
    sub = bus.subscribe()
    for i in range(5):
        bus.publish(f"e{i}")
    assert sub.lost == 2
    bus.close()
    assert await collect(sub) == ["e3", "e4"]  # e2 made room for the end
    assert sub.lost == 3


async def test_unsubscribed_consumers_get_nothing_more() -> None:
    bus: EventBus[str] = EventBus()
    gone, stays = bus.subscribe(), bus.subscribe()
    bus.unsubscribe(gone)
    bus.publish("x")
    bus.close()
    assert await collect(stays) == ["x"]
    assert gone.lost == 0 and gone._queue.empty()
