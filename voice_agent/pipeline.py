"""Stages and pipelines: how frames move, and what an interruption does to them.

A `Stage` runs two owned tasks:

- the *input task* takes every frame as it arrives. A `SystemFrame` is processed right there,
  ahead of anything still queued; any other frame goes to the process queue.
- the *process task* handles data and control frames one at a time, in order.

An `InterruptionFrame` makes each stage drop the data frames it has queued, cancel the data
frame it is processing (a streaming LLM call, say), call `on_interruption`, and pass the
interruption on. Control frames (the end of the stream) stay queued, in order. The
interruption travels through input tasks only, so it reaches the last stage in a few loop
iterations however busy the stages are.

A `Pipeline` links stages between a head and a tail. A stage that decides the user has barged
in calls `request_interruption`, which sends an `InterruptionRequestFrame` upstream; the head
answers with an `InterruptionFrame` sent downstream through every stage. What the asking stage
sends downstream in the meantime is held until the interruption has passed it, so the
interruption cannot cut it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from voice_agent.events import Event, Interruption
from voice_agent.frames import (
    CancelFrame,
    ControlFrame,
    DataFrame,
    Direction,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    InterruptionRequestFrame,
    StartFrame,
    SystemFrame,
)
from voice_agent.tasks import TaskOwner, cancel_and_wait

log = logging.getLogger(__name__)

DOWN = Direction.DOWNSTREAM
UP = Direction.UPSTREAM

EventSink = Callable[[Event], None]
"""Where stages report what happened (see `Stage.emit`)."""

MAX_QUEUED = 2048
"""Frames a stage's process queue holds; past that the oldest data frame is dropped."""


class Stage(TaskOwner):
    """One step of a pipeline. Override `process`; forward what you don't consume with `push`."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name or type(self).__name__)
        self._next: Stage | None = None
        self._prev: Stage | None = None
        self._events: EventSink | None = None
        self._input: asyncio.Queue[tuple[Frame, Direction]] = asyncio.Queue()
        self._queue: deque[tuple[Frame, Direction]] = deque()
        self._wake = asyncio.Event()
        self._process_task: asyncio.Task[None] | None = None
        self._current: Frame | None = None
        self.dropped = 0
        self._asked = 0
        """Interruptions this stage asked for that have not come back down through it yet."""
        self._held: list[Frame] = []
        """What it sent downstream meanwhile: it follows the interruption."""

    # --- for subclasses ------------------------------------------------------------------

    async def process(self, frame: Frame, direction: Direction) -> None:
        """Handle one frame. The default passes it on."""
        await self.push(frame, direction)

    async def on_interruption(self) -> None:
        """Called once per interruption, after queued data is dropped, before it is passed on."""

    async def setup(self) -> None:
        """Called before the first frame."""

    async def cleanup(self) -> None:
        """Called when the pipeline stops, however it stops."""

    async def push(self, frame: Frame, direction: Direction = DOWN) -> None:
        """Send a frame to the next stage downstream, or the previous one upstream."""
        self.push_nowait(frame, direction)

    def push_nowait(self, frame: Frame, direction: Direction = DOWN) -> None:
        """`push`, from code that cannot await (it never blocks either way)."""
        if self._asked and direction is DOWN and not isinstance(frame, InterruptionFrame):
            self._held.append(frame)
            return
        target = self._next if direction is DOWN else self._prev
        if target is not None:
            target.queue_frame(frame, direction)

    def request_interruption(self, reason: str = "") -> None:
        """Ask the pipeline to interrupt the reply in progress (what a barge-in does).

        Until the interruption has come back down through this stage, what the stage sends
        downstream is held, then follows the interruption: sent at once, it would run ahead of
        the interruption and be cut by it (a user's turn decided just after their barge-in)."""
        self._asked += 1
        self.push_nowait(InterruptionRequestFrame(reason=reason), UP)

    @property
    def interruption_pending(self) -> bool:
        """An interruption this stage asked for has not come back through it yet."""
        return self._asked > 0

    def emit(self, event: Event) -> None:
        """Report an event (for metrics and the UI); it is stamped when it is made."""
        if self._events is not None:
            self._events(event)

    # --- machinery -----------------------------------------------------------------------

    def queue_frame(self, frame: Frame, direction: Direction = DOWN) -> None:
        """Hand a frame to this stage (never blocks)."""
        self._input.put_nowait((frame, direction))

    def link(self, nxt: Stage) -> Stage:
        self._next, nxt._prev = nxt, self
        return nxt

    async def start(self, events: EventSink | None) -> None:
        self._events = events
        await self.setup()
        self.create_task(self._input_loop(), "input")
        self._process_task = self.create_task(self._process_loop(), "process")

    async def stop(self) -> None:
        await self.cancel_tasks()
        self._process_task = None
        try:
            await self.cleanup()
        except Exception:
            log.exception("%s: cleanup failed", self.name)

    async def _input_loop(self) -> None:
        while True:
            frame, direction = await self._input.get()
            if isinstance(frame, SystemFrame):
                if isinstance(frame, InterruptionFrame):
                    await self._interrupt()
                await self._handle(frame, direction)
                if isinstance(frame, InterruptionFrame) and self._asked:
                    self._asked -= 1
                    if not self._asked:
                        held, self._held = self._held, []
                        for f in held:
                            self.push_nowait(f)
            else:
                self._enqueue(frame, direction)

    def _enqueue(self, frame: Frame, direction: Direction) -> None:
        if len(self._queue) >= MAX_QUEUED:
            for i, (queued, _) in enumerate(self._queue):
                if isinstance(queued, DataFrame):
                    del self._queue[i]
                    self.dropped += 1
                    if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                        log.warning(
                            "%s: falling behind, %d data frames dropped", self.name, self.dropped
                        )
                    break
        self._queue.append((frame, direction))
        self._wake.set()

    async def _process_loop(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            frame, direction = self._queue.popleft()
            self._current = frame
            try:
                await self._handle(frame, direction)
            finally:
                self._current = None

    async def _interrupt(self) -> None:
        kept = [(f, d) for f, d in self._queue if isinstance(f, ControlFrame)]
        self._queue.clear()
        self._queue.extend(kept)
        if isinstance(self._current, DataFrame) and self._process_task is not None:
            await cancel_and_wait(self._process_task)
            self._current = None
            self._process_task = self.create_task(self._process_loop(), "process")
        self._wake.set()
        await self.on_interruption()

    async def _handle(self, frame: Frame, direction: Direction) -> None:
        try:
            await self.process(frame, direction)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code = error_code(exc)
            if code == "engine":
                log.exception("%s failed on %s", self.name, frame.name)
            else:  # an expected failure under load: no traceback
                log.warning("%s: %s on %s: %s", self.name, code, frame.name, exc)
            message = {
                "busy": f"the server is busy ({exc}); try again in a moment",
                "timeout": f"the {self.name} engine took too long ({exc})",
            }.get(code, f"{type(exc).__name__}: {exc}")
            await self.push(ErrorFrame(message=message, source=self.name, code=code), UP)


def error_code(exc: BaseException) -> str:
    """The `ErrorFrame.code` of a failure: the exception's own `code` if it is a non-empty str
    (a full executor's ``busy``, say), else `timeout` or `engine`."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "engine"


FrameSink = Callable[[Frame], Awaitable[None] | None]


class _Head(Stage):
    """Turns interruption requests into interruptions; hands upstream frames to the owner."""

    def __init__(self, on_upstream: FrameSink | None) -> None:
        super().__init__("head")
        self._on_upstream = on_upstream

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, InterruptionRequestFrame):
            self.emit(Interruption(reason=frame.reason))
            await self.push(InterruptionFrame(reason=frame.reason), DOWN)
        elif direction is DOWN:
            await self.push(frame, direction)
        elif self._on_upstream is not None:
            result = self._on_upstream(frame)
            if result is not None:
                await result


class _Tail(Stage):
    """Hands downstream frames to the owner; notes the end of the stream."""

    def __init__(self, on_downstream: FrameSink | None) -> None:
        super().__init__("tail")
        self._on_downstream = on_downstream
        self.ended = asyncio.Event()

    async def process(self, frame: Frame, direction: Direction) -> None:
        if direction is UP:
            await self.push(frame, direction)
            return
        if self._on_downstream is not None:
            result = self._on_downstream(frame)
            if result is not None:
                await result
        if isinstance(frame, EndFrame | CancelFrame):
            self.ended.set()


class Pipeline:
    """Stages linked in order, started and stopped together."""

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        on_upstream: FrameSink | None = None,
        on_downstream: FrameSink | None = None,
        events: EventSink | None = None,
    ) -> None:
        self._head = _Head(on_upstream)
        self._tail = _Tail(on_downstream)
        self.stages = [self._head, *stages, self._tail]
        for a, b in zip(self.stages, self.stages[1:], strict=False):
            a.link(b)
        self._events = events

    async def start(self, sample_rate: int = 16000) -> None:
        for stage in self.stages:
            await stage.start(self._events)
        self.queue(StartFrame(sample_rate=sample_rate))

    def queue(self, frame: Frame, direction: Direction = DOWN) -> None:
        """Send a frame in at the head (downstream) or at the tail (upstream)."""
        (self._head if direction is DOWN else self._tail).queue_frame(frame, direction)

    def interrupt(self, reason: str = "") -> None:
        """Interrupt the reply in progress (what a barge-in does)."""
        self._head.queue_frame(InterruptionRequestFrame(reason=reason), UP)

    async def wait_ended(self) -> None:
        """Until an EndFrame (or CancelFrame) has come out of the last stage."""
        await self._tail.ended.wait()

    async def stop(self) -> None:
        """Stop every stage and wait for all their tasks; safe to call twice."""
        for stage in self.stages:
            await stage.stop()

    @property
    def tasks(self) -> list[asyncio.Task[Any]]:
        return [t for s in self.stages for t in s.tasks]
