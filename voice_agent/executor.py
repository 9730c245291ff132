"""The bounded pool where engines run, so that the event loop never runs inference.

Engines are synchronous; stages call them through a `Runner`: `run` (one call) or `stream` (a
synchronous iterator, one `next()` per call, so a cancelled stream stops between items and its
generator is closed). `EngineExecutor` is the shared pool; `EngineExecutor.lane(name)` gives each
session a `Lane` with the same API, and the pool is shared fairly between lanes:

- A call waits in its lane's first-in-first-out queue. Whenever a pool thread is free, the next
  call comes from the lane with work that was served least recently, so busy lanes take turns
  (round robin) and a lane with one call waits for at most one call from each other lane, never
  behind another session's whole burst (a long LLM stream, a run of ASR partials). Calls made on
  the executor itself go through its default lane.
- Urgent work first: each call has a `Priority`. A free pool thread takes the most urgent call
  at the front of any lane, and among equals the lane served least recently. What decides when
  a person hears the reply (the final transcript, the end-of-turn score, the first clause's
  speech) is `URGENT`; later sentences are `NORMAL`; partial transcripts are `BACKGROUND`, so
  eight sessions' partials never hold up one session's final.
- Calls beyond `max_pending` (waiting or running, all lanes together) are refused with
  `BusyError` at once rather than queued behind everyone else.
- A call that runs past its timeout (`call_timeout_s` unless the caller gives one) raises
  `TimeoutError` in the caller; the thread finishes on its own. The timeout counts from when the
  call starts running, not while it waits its turn: it guards against a hung engine, and the
  queue is already bounded by `max_pending`.
- A cancelled call that is still waiting leaves its queue and never runs; a cancelled call that
  is running finishes on its own thread, and its result is dropped.

Dispatch happens on the event loop, in the callbacks of the calls that end (no extra thread, no
task), and never hands the pool more calls than it has threads, so the order above is the order
calls start. One executor serves one event loop at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum, IntEnum, auto
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

T = TypeVar("T")
_END = object()


class Priority(IntEnum):
    """How soon a call should run when the pool is contended (lower first)."""

    URGENT = 0
    """On the path to the reply's first sound: final transcripts, end of turn, first clause."""
    NORMAL = 1
    BACKGROUND = 2
    """Nice to have soon: partial transcripts."""


class BusyError(RuntimeError):
    """Too many engine calls are waiting; the caller should answer 'busy'."""

    code = "busy"
    """The `ErrorFrame.code` a stage that fails with it reports."""


class Runner(Protocol):
    """What stages call engines through: an `EngineExecutor` or one of its lanes."""

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout_s: float | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> T:
        """Run `fn(*args)` in the pool and return its result."""
        ...

    def stream(
        self,
        it: Iterator[T],
        *,
        timeout_s: float | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> AsyncIterator[T]:
        """Iterate a synchronous iterator in the pool, one item per call."""
        ...


class _State(Enum):
    QUEUED = auto()
    RUNNING = auto()
    DROPPED = auto()


@dataclass(eq=False, slots=True)
class _Job:
    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    timeout_s: float
    result: asyncio.Future[Any] | None
    """Where the caller waits; None for a stream's clean-up, which nobody waits for."""
    priority: Priority = Priority.NORMAL
    state: _State = _State.QUEUED
    timer: asyncio.TimerHandle | None = None

    @property
    def abandoned(self) -> bool:
        return self.result is not None and self.result.done()


class Lane(Runner):
    """One session's queue into a shared `EngineExecutor` (see the module docstring).

    `name` only labels the lane; two lanes with the same name are still two queues. `close()`
    (or leaving a `with` block) refuses further calls; calls already waiting still run.
    """

    def __init__(self, executor: EngineExecutor, name: str) -> None:
        self.executor = executor
        self.name = name
        self.closed = False
        self._queue: deque[_Job] = deque()
        self._served = 0
        """The executor's dispatch count when this lane last started a call (0: never)."""

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout_s: float | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> T:
        """Run `fn(*args)` in the pool, in this lane's turn, and return its result."""
        if self.closed:
            raise RuntimeError(f"engine lane {self.name!r} is closed")
        return await self.executor._call(self, functools.partial(fn, *args), timeout_s, priority)

    async def stream(
        self,
        it: Iterator[T],
        *,
        timeout_s: float | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> AsyncIterator[T]:
        """Iterate a synchronous iterator in the pool, one item per call.

        However the iteration ends (exhausted, cancelled, failed), the iterator is closed in the
        pool once any `next()` still running there has returned (by that step itself: no pool
        thread waits for a step that hangs), so a generator's clean-up runs and nothing waits
        for it.
        """
        lock = threading.Lock()
        closing = threading.Event()
        closed = False

        def step() -> object:
            with lock:
                item = next(it, _END)
            if closing.is_set():  # closed while this step ran: close it now
                close_once()
            return item

        def close_once() -> None:
            nonlocal closed
            # Never wait for a step that hangs: that step closes the iterator when it returns
            # (a pool thread blocked here would be one more thread lost to a hung engine).
            if not lock.acquire(blocking=False):
                return
            try:
                if not closed:
                    closed = True
                    with contextlib.suppress(Exception):
                        getattr(it, "close", lambda: None)()
            finally:
                lock.release()

        def close() -> None:
            closing.set()
            close_once()

        try:
            while True:
                item = await self.run(step, timeout_s=timeout_s, priority=priority)
                if item is _END:
                    return
                yield cast(T, item)
        finally:
            self.executor._clean_up(self, close)

    def close(self) -> None:
        """Refuse further calls (the session is over); calls already waiting still run."""
        self.closed = True

    def __enter__(self) -> Lane:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Lane({self.name!r}, waiting={len(self._queue)})"


class EngineExecutor(Runner):
    """A thread pool shared fairly by lanes, with a bound on calls and a timeout on each.

    `pending` counts the calls that callers are waiting for (queued or running), which
    `max_pending` bounds; `running` counts the pool threads busy with this executor's work,
    including calls whose caller has stopped waiting and streams' clean-ups.
    """

    def __init__(
        self, workers: int = 2, max_pending: int = 64, call_timeout_s: float = 20.0
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="engine")
        self.workers = workers
        self.max_pending = max_pending
        self.call_timeout_s = call_timeout_s
        self.pending = 0
        self.running = 0
        self._default = Lane(self, "default")
        self._ready: dict[Lane, None] = {}
        """Lanes with waiting calls, in the order they got them (an ordered set)."""
        self._dispatched = 0
        self._shut = False

    def lane(self, name: str) -> Lane:
        """A new queue for one session's calls, served in turn with the other lanes."""
        return Lane(self, name)

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout_s: float | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> T:
        """Run `fn(*args)` in the pool (in the default lane) and return its result."""
        return await self._default.run(fn, *args, timeout_s=timeout_s, priority=priority)

    def stream(
        self,
        it: Iterator[T],
        *,
        timeout_s: float | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> AsyncIterator[T]:
        """Iterate a synchronous iterator in the pool (in the default lane); see `Lane.stream`."""
        return self._default.stream(it, timeout_s=timeout_s, priority=priority)

    def shutdown(self) -> None:
        """Stop the pool without waiting for running calls; calls still waiting are cancelled."""
        self._shut = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        for lane in list(self._ready):
            for job in lane._queue:
                if job.result is not None:
                    with contextlib.suppress(RuntimeError):  # its loop is closed
                        job.loop.call_soon_threadsafe(job.result.cancel)

    async def _call(
        self, lane: Lane, fn: Callable[[], T], timeout_s: float | None, priority: Priority
    ) -> T:
        if self._shut:
            raise RuntimeError("cannot run engine calls after the executor shut down")
        if self.pending >= self.max_pending:
            raise BusyError(f"{self.pending} engine calls already waiting")
        loop = asyncio.get_running_loop()
        result: asyncio.Future[T] = loop.create_future()
        job = _Job(fn, loop, timeout_s or self.call_timeout_s, result, priority)
        self.pending += 1
        try:
            self._enqueue(lane, job)
            return await result
        finally:
            self.pending -= 1
            if job.state is _State.QUEUED:  # cancelled while waiting its turn
                job.state = _State.DROPPED
                lane._queue.remove(job)
                if not lane._queue:
                    del self._ready[lane]

    def _clean_up(self, lane: Lane, fn: Callable[[], None]) -> None:
        """Queue `fn` in `lane`, outside the bound, with nobody waiting for it."""
        if self._shut:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a stream finalised outside any loop: no turn to wait for
            with contextlib.suppress(RuntimeError):
                self._pool.submit(fn)
            return
        self._enqueue(lane, _Job(fn, loop, self.call_timeout_s, None, Priority.URGENT))

    def _enqueue(self, lane: Lane, job: _Job) -> None:
        lane._queue.append(job)
        self._ready.setdefault(lane, None)
        self._dispatch()

    def _dispatch(self) -> None:
        """Start waiting calls, lane by lane in turn, while a pool thread is free."""
        while self.running < self.workers and self._ready:
            lane = min(self._ready, key=lambda ln: (ln._queue[0].priority, ln._served))
            job = lane._queue.popleft()
            if not lane._queue:
                del self._ready[lane]
            if job.abandoned:  # cancelled, and its caller has not woken up to remove it yet
                job.state = _State.DROPPED
                continue
            self._dispatched += 1
            lane._served = self._dispatched
            self._start(job)

    def _start(self, job: _Job) -> None:
        job.state = _State.RUNNING
        try:
            done = self._pool.submit(job.fn)
        except RuntimeError as e:  # the pool is shut down
            if job.result is not None:
                job.result.set_exception(e)
            return
        self.running += 1
        if job.result is not None:
            job.timer = job.loop.call_later(job.timeout_s, self._expire, job)
        done.add_done_callback(functools.partial(self._thread_done, job))

    def _expire(self, job: _Job) -> None:
        if job.result is not None and not job.result.done():
            job.result.set_exception(TimeoutError(f"engine call ran past {job.timeout_s} s"))

    def _thread_done(self, job: _Job, done: Future[Any]) -> None:
        """In the pool thread: hand the outcome to the loop."""
        try:
            job.loop.call_soon_threadsafe(self._finished, job, done)
        except RuntimeError:  # the loop is closed: nobody is waiting, nothing to dispatch
            self.running -= 1

    def _finished(self, job: _Job, done: Future[Any]) -> None:
        """On the loop: a call has ended; give its result to the caller, start the next."""
        self.running -= 1
        if job.timer is not None:
            job.timer.cancel()
        result = job.result
        if result is not None and not result.done():
            if done.cancelled():
                result.cancel()
            elif isinstance(exc := done.exception(), StopIteration):  # futures refuse it
                result.set_exception(RuntimeError(f"engine call raised StopIteration: {exc!r}"))
            elif exc is not None:
                result.set_exception(exc)
            else:
                result.set_result(done.result())
        self._dispatch()
