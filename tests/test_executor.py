"""EngineExecutor: lanes share the pool in turn, within a bound, with a timeout per running call."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest

from tests.stagerun import until
from voice_agent.executor import BusyError, EngineExecutor, Lane, Runner


class Blocker:
    """A call that runs until released, so tests decide when the pool thread frees up."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self) -> str:
        assert self.release.wait(5)
        return "blocked"


async def test_lanes_take_turns_on_a_busy_pool() -> None:
    ex = EngineExecutor(workers=1, call_timeout_s=5)
    a, b, c = ex.lane("a"), ex.lane("b"), ex.lane("c")
    order: list[str] = []
    first = Blocker()
    blocked = asyncio.ensure_future(a.run(first))
    await until(lambda: ex.pending == 1)
    calls = [(a, "a1"), (a, "a2"), (a, "a3"), (b, "b1"), (b, "b2"), (c, "c1"), (ex, "d1")]
    waiting = [asyncio.ensure_future(r.run(order.append, tag)) for r, tag in calls]
    await until(lambda: ex.pending == 8)
    assert ex.running == 1 and order == []
    first.release.set()
    assert await blocked == "blocked"
    await asyncio.gather(*waiting)
    # Lane a was served last (its blocker), so every other lane goes before its next call;
    # then each lane with work left gets one call per round.
    assert order == ["b1", "c1", "d1", "a1", "b2", "a2", "a3"]
    assert ex.pending == 0 and ex.running == 0
    ex.shutdown()


async def test_a_lane_with_one_call_waits_for_one_call_per_busy_lane() -> None:
    ex = EngineExecutor(workers=2, call_timeout_s=5)
    a, b = ex.lane("a"), ex.lane("b")
    order: list[str] = []
    blockers = [Blocker(), Blocker()]
    running = [asyncio.ensure_future(a.run(x)) for x in blockers]
    await until(lambda: ex.pending == 2)
    burst = [asyncio.ensure_future(a.run(order.append, f"a{i}")) for i in range(10)]
    await until(lambda: ex.pending == 12)
    single = asyncio.ensure_future(b.run(order.append, "b"))
    await until(lambda: ex.pending == 13)
    blockers[0].release.set()
    await single
    assert order[0] == "b"
    blockers[1].release.set()
    await asyncio.gather(*running, *burst)
    assert sorted(order) == sorted(["b", *(f"a{i}" for i in range(10))])
    ex.shutdown()


async def test_the_bound_counts_calls_of_every_lane_and_refuses_at_once() -> None:
    ex = EngineExecutor(workers=1, max_pending=2, call_timeout_s=5)
    a, b = ex.lane("a"), ex.lane("b")
    blocker = Blocker()
    running = asyncio.ensure_future(a.run(blocker))
    queued = asyncio.ensure_future(b.run(lambda: "queued"))
    await until(lambda: ex.pending == 2)
    for runner in (a, b, ex, ex.lane("c")):
        with pytest.raises(BusyError):
            await runner.run(lambda: None)
    assert ex.pending == 2
    blocker.release.set()
    assert await asyncio.gather(running, queued) == ["blocked", "queued"]
    assert ex.pending == 0
    ex.shutdown()


async def test_timeout_counts_from_the_start_of_the_call_not_the_wait() -> None:
    ex = EngineExecutor(workers=1, call_timeout_s=0.05)
    lane = ex.lane("a")
    blocker = Blocker()
    hung = threading.Event()
    running = asyncio.ensure_future(lane.run(blocker, timeout_s=5))
    queued = asyncio.ensure_future(lane.run(hung.wait, 5))
    await until(lambda: ex.pending == 2)
    await asyncio.sleep(0.15)  # three timeouts' worth of waiting in the queue
    assert not queued.done()
    blocker.release.set()
    assert await running == "blocked"
    with pytest.raises(TimeoutError):
        await queued
    # The caller gave up; the thread is still busy until the call returns.
    assert ex.pending == 0 and ex.running == 1
    after = asyncio.ensure_future(lane.run(lambda: "after"))
    await until(lambda: ex.pending == 1)
    assert not after.done()
    hung.set()
    assert await after == "after"
    assert ex.running == 0
    ex.shutdown()


async def test_a_cancelled_waiting_call_never_runs() -> None:
    ex = EngineExecutor(workers=1, call_timeout_s=5)
    a, b = ex.lane("a"), ex.lane("b")
    blocker = Blocker()
    ran: list[str] = []
    running = asyncio.ensure_future(a.run(blocker))
    doomed = asyncio.ensure_future(b.run(ran.append, "doomed"))
    kept = asyncio.ensure_future(b.run(ran.append, "kept"))
    await until(lambda: ex.pending == 3)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert ex.pending == 2
    blocker.release.set()
    await asyncio.gather(running, kept)
    assert ran == ["kept"]
    ex.shutdown()


async def test_a_cancelled_running_call_finishes_on_its_thread() -> None:
    ex = EngineExecutor(workers=1, call_timeout_s=5)
    blocker = Blocker()
    running = asyncio.ensure_future(ex.run(blocker))
    await until(lambda: ex.pending == 1)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert ex.pending == 0 and ex.running == 1
    blocker.release.set()
    assert await ex.run(lambda: "next") == "next"
    assert ex.running == 0
    ex.shutdown()


async def test_a_stream_through_a_lane_closes_its_iterator_in_the_pool() -> None:
    ex = EngineExecutor(workers=1, call_timeout_s=5)
    lane = ex.lane("a")
    closed_in: list[str] = []

    def words() -> Iterator[str]:
        try:
            yield from ["one", "two", "three"]
        finally:
            closed_in.append(threading.current_thread().name)

    assert [w async for w in lane.stream(iter(["x", "y"]))] == ["x", "y"]
    async with contextlib.aclosing(lane.stream(words())) as stream:
        async for word in stream:
            assert word == "one"
            break
    # The clean-up was queued in the lane before this call, and the lane is first in first out.
    assert await lane.run(lambda: list(closed_in)) == [closed_in[0]]
    assert closed_in[0].startswith("engine")
    assert ex.pending == 0 and ex.running == 0
    ex.shutdown()


async def test_a_cancelled_stream_is_closed_after_its_running_step() -> None:
    ex = EngineExecutor(workers=2, call_timeout_s=5)
    lane = ex.lane("a")
    release = threading.Event()
    events: list[str] = []

    def slow() -> Iterator[int]:
        try:
            yield 1
            assert release.wait(5)
            events.append("step returned")
            yield 2
        finally:
            events.append("closed")

    stream = lane.stream(slow())
    assert await stream.__anext__() == 1
    step = asyncio.ensure_future(stream.__anext__())
    await until(lambda: ex.pending == 1)
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    release.set()
    while ex.running:  # the step, then the clean-up that waited for it
        await ex.run(lambda: None)
    assert events == ["step returned", "closed"]
    ex.shutdown()


async def test_a_stream_whose_step_hangs_holds_one_thread_not_two() -> None:
    ex = EngineExecutor(workers=2, call_timeout_s=0.2)
    lane = ex.lane("a")
    release = threading.Event()
    closed = threading.Event()

    def hangs() -> Iterator[int]:
        try:
            release.wait(30)
            yield 1
        finally:
            closed.set()

    with pytest.raises(TimeoutError):
        async for _ in lane.stream(hangs()):
            pass
    # the clean-up must not sit on the other thread waiting for the hung step
    async with asyncio.timeout(5):
        assert await ex.run(lambda: 42) == 42
    assert not closed.is_set()
    release.set()
    await asyncio.to_thread(closed.wait, 5)
    assert closed.is_set()  # the step, once it returned, closed its iterator
    ex.shutdown()


async def test_a_closed_lane_refuses_calls_and_both_kinds_are_runners() -> None:
    ex = EngineExecutor(workers=1)
    runners: list[Runner] = [ex]
    with ex.lane("s1") as lane:
        runners.append(lane)
        assert [await r.run(len, "abc") for r in runners] == [3, 3]
    assert isinstance(lane, Lane) and lane.closed
    with pytest.raises(RuntimeError, match="closed"):
        await lane.run(len, "abc")
    assert await ex.run(len, "abcd") == 4
    ex.shutdown()


async def test_no_threads_beyond_the_pool_and_none_after_shutdown() -> None:
    before = set(threading.enumerate())
    ex = EngineExecutor(workers=2, call_timeout_s=5)
    lanes = [ex.lane(f"s{i}") for i in range(5)]
    results = await asyncio.gather(*(ln.run(sum, [i, i]) for i, ln in enumerate(lanes * 4)))
    assert results == [2 * i for i in range(20)]
    assert [x async for x in lanes[0].stream(iter(range(3)))] == [0, 1, 2]
    await ex.run(lambda: None)  # after the stream's clean-up
    extra = set(threading.enumerate()) - before
    assert 1 <= len(extra) <= 2 and all(t.name.startswith("engine") for t in extra)
    ex.shutdown()
    for t in extra:
        t.join(5)
    assert not any(t.is_alive() for t in extra)
    with pytest.raises(RuntimeError):
        await ex.run(lambda: None)


async def test_shutdown_cancels_waiting_calls() -> None:
    ex = EngineExecutor(workers=1, call_timeout_s=5)
    blocker = Blocker()
    running = asyncio.ensure_future(ex.run(blocker))
    waiting = asyncio.ensure_future(ex.lane("a").run(lambda: "never"))
    await until(lambda: ex.pending == 2)
    ex.shutdown()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    blocker.release.set()
    assert await running == "blocked"


async def test_an_engine_error_reaches_the_caller_and_the_pool_goes_on() -> None:
    ex = EngineExecutor(workers=1, call_timeout_s=5)
    with pytest.raises(ZeroDivisionError):
        await ex.run(lambda: 1 / 0)
    with pytest.raises(RuntimeError, match="StopIteration"):
        await ex.run(next, iter([]))
    assert await ex.run(len, "ok") == 2
    assert ex.pending == 0 and ex.running == 0
    ex.shutdown()
