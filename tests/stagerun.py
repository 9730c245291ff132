"""Run stages on frames in a test: what came out each way, what was emitted, and no sleeps.

`run_stages` puts the stages under test in a `Pipeline` (between its head and tail), sends the
frames, ends the run and returns it; `StageRun` does the same step by step, for a test that looks
at a state in the middle. Either way the run records every frame that comes out downstream
(`down`, at the tail) and upstream (`up`, at the head), and every event the stages emit
(`events`). Nothing is filtered: the `StartFrame` and the `EndFrame` are in `down` if the stages
pass them on.

A run finishes on the pipeline's own end: `end()` sends an `EndFrame` (unless one was sent
already) and waits until it has come out of the last stage, so every frame sent before it has
been handled; then it sends a `DrainFrame` upstream from the tail and waits until it has come out
at the head, so everything the stages sent upstream on the way has come out too (the stages see
that frame and forward it, like any frame they do not know). Every wait is for a frame to come
out, under a timeout that fails the test. `until` is the one polling wait, for a state no frame
marks (a thread's work, a sink's writes).

In one call, Pipecat's `run_test` style (a step that is not a frame is awaited before the next
is sent; `(frame, UP)` sends a frame upstream from the tail)::

    run = await run_stages(Flaky(), frames=[LLMTextFrame(text="bad"), LLMTextFrame(text="ok")])
    assert [f.text for f in run.of(LLMTextFrame)] == ["ok"]
    assert [f.code for f in run.of(ErrorFrame, UP)] == ["engine"]

Step by step::

    async with StageRun(PlaybackStage(sink)) as run:
        run.send(TTSStartedFrame(), audio)          # sent, not waited for
        await until(lambda: len(sink.frames) == 2)  # a state no frame marks
        await run.through(DuckOutputFrame(db=24))   # sent, and out at the tail
        await run.interrupt("barge-in")             # until the InterruptionFrame is out
        await run.end()
    assert "playback_interrupted" in run.event_names

Leaving the block stops the pipeline (and awaits every task of it), however the block ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from voice_agent.frames import ControlFrame, Direction, EndFrame, Frame, InterruptionFrame
from voice_agent.pipeline import DOWN, UP, Pipeline, Stage

F = TypeVar("F", bound=Frame)

TIMEOUT_S = 5.0
"""How long a run waits for a frame to come out, or `until` for its condition."""

Step = Frame | tuple[Frame, Direction] | Awaitable[object]
"""What `run_stages` sends: a frame (downstream), a frame and its direction, or a wait."""


@dataclass(slots=True, kw_only=True)
class DrainFrame(ControlFrame):
    """Sent upstream from the tail by `StageRun.end`; its arrival at the head marks the end."""


@contextlib.asynccontextmanager
async def _within(seconds: float, what: str) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise AssertionError(f"still waiting after {seconds} s for {what}") from None


async def until(condition: Callable[[], object]) -> None:
    """Wait until `condition()` is true: checked on each of the next 100 loop iterations, then
    every millisecond (for work done on a thread). Fails the test after `TIMEOUT_S`."""
    async with _within(TIMEOUT_S, "a condition to hold"):
        spins = 0
        while not condition():
            spins += 1
            await asyncio.sleep(0 if spins <= 100 else 0.001)


class StageRun:
    """Stages in a pipeline, started on entering the block and stopped on leaving it, with
    everything that comes out of them recorded (see the module's docstring)."""

    def __init__(self, *stages: Stage, sample_rate: int = 16000, timeout: float = TIMEOUT_S):
        self.down: list[Frame] = []
        """Frames that came out of the last stage, in order."""
        self.up: list[Frame] = []
        """Frames that came out of the first stage upstream, in order."""
        self.events: list[tuple[str, dict[str, Any]]] = []
        """`(event, data)` of each `Stage.emit`, in order."""
        self.timeout = timeout
        self.pipeline = Pipeline(
            stages,
            on_downstream=self._came_out(self.down),
            on_upstream=self._came_out(self.up),
            events=lambda event: self.events.append((event.type, event.data)),
        )
        self._sample_rate = sample_rate
        self._out: set[int] = set()
        self._arrived = asyncio.Event()
        self._end_sent = False

    def _came_out(self, frames: list[Frame]) -> Callable[[Frame], None]:
        def record(frame: Frame) -> None:
            if not isinstance(frame, DrainFrame):
                frames.append(frame)
            self._out.add(frame.id)
            self._arrived.set()

        return record

    async def __aenter__(self) -> StageRun:
        await self.pipeline.start(self._sample_rate)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pipeline.stop()

    def send(self, *frames: Frame, direction: Direction = DOWN) -> None:
        """Send frames in at the head (downstream) or the tail (upstream), without waiting."""
        for frame in frames:
            self._end_sent |= isinstance(frame, EndFrame)
            self.pipeline.queue(frame, direction)

    async def through(self, *frames: Frame, direction: Direction = DOWN) -> None:
        """Send frames and wait until each has come out at the other end (a frame a stage
        replaces counts if the replacement keeps its id)."""
        self.send(*frames, direction=direction)
        names = ", ".join(f.name for f in frames)
        await self._wait(lambda: all(f.id in self._out for f in frames), names)

    async def interrupt(self, reason: str = "") -> None:
        """Interrupt, as a barge-in does, and wait until the `InterruptionFrame` has come out."""
        before = len(self.of(InterruptionFrame))
        self.pipeline.interrupt(reason)
        await self._wait(lambda: len(self.of(InterruptionFrame)) > before, "an InterruptionFrame")

    async def end(self) -> None:
        """Send an `EndFrame` (unless one was sent), wait until it has come out of the last
        stage, then until what the stages sent upstream before it has come out at the head."""
        if not self._end_sent:
            self.send(EndFrame())
        async with _within(self.timeout, "the EndFrame to come out"):
            await self.pipeline.wait_ended()
        await self.through(DrainFrame(), direction=UP)

    def of(self, kind: type[F], direction: Direction = DOWN) -> list[F]:
        """The frames of one type that came out downstream (or upstream)."""
        return [f for f in (self.down if direction is DOWN else self.up) if isinstance(f, kind)]

    @property
    def event_names(self) -> list[str]:
        return [event for event, _ in self.events]

    async def _wait(self, done: Callable[[], bool], what: str) -> None:
        async with _within(self.timeout, what):
            while not done():
                self._arrived.clear()
                await self._arrived.wait()


async def run_stages(
    *stages: Stage,
    frames: Iterable[Step],
    sample_rate: int = 16000,
) -> StageRun:
    """Run `stages` on `frames` (a step that is not a frame is awaited before the next is
    sent), end the run (see `StageRun.end`), stop it and return it."""
    async with StageRun(*stages, sample_rate=sample_rate) as run:
        for step in frames:
            if isinstance(step, Frame):
                run.send(step)
            elif isinstance(step, tuple):
                run.send(step[0], direction=step[1])
            else:
                await step
        await run.end()
    return run
