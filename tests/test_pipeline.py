"""Frame semantics of Stage and Pipeline: queue jumping, interruption, errors, ownership."""

from __future__ import annotations

import asyncio
import logging
import threading

import numpy as np
import pytest

from tests.stagerun import StageRun, run_stages, until
from voice_agent.backbone.chunking import ClauseChunker
from voice_agent.executor import BusyError, EngineExecutor
from voice_agent.frames import (
    Direction,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMTextFrame,
    StartFrame,
    UserStartedSpeakingFrame,
)
from voice_agent.pipeline import DOWN, MAX_QUEUED, UP, Stage
from voice_agent.tasks import TaskOwner


class Recorder(Stage):
    """Records what it processes downstream; blocks on data frames while `gate` is closed."""

    def __init__(self, name: str = "rec") -> None:
        super().__init__(name)
        self.seen: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()
        """Set once a data frame has waited at the closed gate."""
        self.interruptions = 0
        self.cancelled: list[str] = []

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, StartFrame):
            return
        if direction is not DOWN:
            await self.push(frame, direction)
            return
        label = getattr(frame, "text", type(frame).__name__)
        if isinstance(frame, LLMTextFrame):
            try:
                if not self.gate.is_set():
                    self.waiting.set()
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled.append(label)
                raise
        self.seen.append(label)
        await self.push(frame, direction)

    async def on_interruption(self) -> None:
        self.interruptions += 1


async def test_system_frames_jump_ahead_of_queued_data() -> None:
    rec = Recorder()
    async with StageRun(rec) as run:
        rec.gate.clear()
        run.send(LLMTextFrame(text="d1"), LLMTextFrame(text="d2"))
        await run.through(UserStartedSpeakingFrame())
        assert rec.seen == ["UserStartedSpeakingFrame"]  # while d1 is still being processed
        rec.gate.set()
        await run.end()
    assert rec.seen == ["UserStartedSpeakingFrame", "d1", "d2", "EndFrame"]


async def test_interruption_drops_data_cancels_work_in_flight_and_keeps_control_frames() -> None:
    a, b = Recorder("a"), Recorder("b")
    async with StageRun(a, b) as run:
        a.gate.clear()
        run.send(LLMTextFrame(text="in-flight"), LLMTextFrame(text="queued"), EndFrame())
        await until(a.waiting.is_set)
        await run.interrupt("barge-in")
        assert a.cancelled == ["in-flight"]
        assert a.interruptions == 1 and b.interruptions == 1  # every stage saw it once
        await run.end()
        assert [type(f).__name__ for f in run.down] == ["InterruptionFrame", "EndFrame"]
        assert "queued" not in a.seen + b.seen
        # the stage still works after an interruption
        a.gate.set()
        await run.through(LLMTextFrame(text="after"))
        assert b.seen[-1] == "after"


async def test_a_failing_stage_reports_upstream_and_keeps_working() -> None:
    class Flaky(Stage):
        async def process(self, frame: Frame, direction: Direction) -> None:
            if isinstance(frame, LLMTextFrame) and frame.text == "bad":
                raise ValueError("cannot handle this")
            await self.push(frame, direction)

    run = await run_stages(
        Flaky("flaky"), frames=[LLMTextFrame(text="bad"), LLMTextFrame(text="good")]
    )
    assert [(type(f), f.source, f.message) for f in run.of(ErrorFrame, UP)] == [
        (ErrorFrame, "flaky", "ValueError: cannot handle this")
    ]
    assert [f.text for f in run.of(LLMTextFrame)] == ["good"]


async def test_a_failure_that_carries_its_own_code_is_reported_with_it() -> None:
    class Throttled(Exception):
        code = "throttled"

    class Numbered(TimeoutError):
        code = 504  # not a str: not an ErrorFrame code

    failures = {
        "full": BusyError("3 engine calls already waiting"),
        "throttled": Throttled("slow down"),
        "numbered": Numbered("gateway"),
        "empty": type("Empty", (Exception,), {"code": ""})("no code"),
    }

    class Failing(Stage):
        async def process(self, frame: Frame, direction: Direction) -> None:
            if isinstance(frame, LLMTextFrame):
                raise failures[frame.text]
            await self.push(frame, direction)

    run = await run_stages(Failing("failing"), frames=[LLMTextFrame(text=k) for k in failures])
    errors = run.of(ErrorFrame, UP)
    assert [f.code for f in errors] == ["busy", "throttled", "timeout", "engine"]
    assert errors[0].message.startswith("the server is busy (3 engine calls already waiting)")
    assert errors[1].message == "Throttled: slow down"


async def test_upstream_frames_reach_the_owner_and_stop_leaves_no_task() -> None:
    before = asyncio.all_tasks()
    async with StageRun(Recorder(), Recorder("r2")) as run:
        assert len(run.pipeline.tasks) == 8  # two tasks per stage, head and tail included
        await run.through(ErrorFrame(message="x"), direction=UP)
        await run.end()
    assert [type(f) for f in run.up] == [ErrorFrame]
    await run.pipeline.stop()  # idempotent (leaving the block stopped it once)
    assert run.pipeline.tasks == []
    assert asyncio.all_tasks() <= before


async def test_a_stage_that_falls_behind_drops_its_oldest_data_never_control(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    async with StageRun(rec) as run:
        rec.gate.clear()
        run.send(LLMTextFrame(text="busy"))
        await until(rec.waiting.is_set)
        run.send(EndFrame(), *(LLMTextFrame(text=f"t{i}") for i in range(MAX_QUEUED + 5)))
        with caplog.at_level(logging.WARNING):
            await until(lambda: sum(s.dropped for s in run.pipeline.stages) >= 6)
        assert "falling behind" in caplog.text
        rec.gate.set()
        await run.end()
        assert sum(s.dropped for s in run.pipeline.stages) == 6  # wherever the backlog built up
    assert rec.seen[:2] == ["busy", "EndFrame"]  # control kept, in its place
    assert rec.seen[2] == "t6"


async def test_task_owner_cancels_and_awaits_everything_and_logs_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = TaskOwner("owner")
    finished: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            finished.append("forever")

    async def fails() -> None:
        raise RuntimeError("oops")

    owner.create_task(forever(), "forever")
    with caplog.at_level(logging.ERROR):
        await asyncio.wait([owner.create_task(fails(), "fails")])
    assert "owner:fails failed" in caplog.text
    await owner.cancel_tasks()
    assert finished == ["forever"] and owner.tasks == frozenset()


def test_chunker_speaks_the_first_clause_early_then_whole_sentences() -> None:
    c = ClauseChunker(first_max_chars=30)
    out: list[str] = []
    for piece in [
        "Well,",
        "that",
        "depends.",
        "The",
        "sky",
        "is",
        "blue",
        "because",
        "air",
        "scatters",
        "blue",
        "light.",
        "Ok",
    ]:
        out += c.feed(piece + " ")
    out.append(c.flush())
    assert out == [
        "Well,",
        "that depends.",
        "The sky is blue because air scatters blue light.",
        "Ok",
    ]


def test_chunker_cuts_a_long_first_clause_at_a_word_boundary() -> None:
    c = ClauseChunker(first_max_chars=20)
    assert c.feed("one two three four five six seven eight") == ["one two three four"]
    assert c.flush() == "five six seven eight"


async def test_executor_streams_refuses_when_full_and_closes_cancelled_streams() -> None:
    ex = EngineExecutor(workers=1, max_pending=1, call_timeout_s=5)
    assert [x async for x in ex.stream(iter([1, 2, 3]))] == [1, 2, 3]
    release = threading.Event()
    closed = threading.Event()

    def slow() -> object:
        try:
            yield 1
            release.wait(5)
            yield 2
        finally:
            closed.set()

    gen = ex.stream(slow())
    assert await gen.__anext__() == 1
    pending = asyncio.ensure_future(gen.__anext__())
    await until(lambda: ex.pending == 1)
    with pytest.raises(BusyError):
        await ex.run(lambda: None)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    release.set()
    assert await asyncio.get_running_loop().run_in_executor(None, closed.wait, 5)
    assert ex.pending == 0
    ex.shutdown()


async def test_executor_times_out_a_hung_call() -> None:
    ex = EngineExecutor(workers=1, call_timeout_s=0.05)
    stop = threading.Event()
    with pytest.raises(TimeoutError):
        await ex.run(stop.wait, 5)
    stop.set()
    ex.shutdown()


def test_frames_are_small_slotted_records_with_ids() -> None:
    a, b = InterruptionFrame(), InterruptionFrame()
    assert b.id > a.id and not hasattr(a, "__dict__")
    assert a.created_ns <= b.created_ns
    assert np.int16 == np.dtype("int16")


def test_only_the_task_owner_starts_tasks() -> None:
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "voice_agent"
    bare = re.compile(r"asyncio\.(create_task|ensure_future)\(|\bloop\.create_task\(")
    offenders = [
        f"{path.relative_to(package)}:{n}"
        for path in package.rglob("*.py")
        if path.name != "tasks.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if bare.search(line)
    ]
    assert offenders == []


async def test_what_a_stage_sends_after_asking_for_an_interruption_follows_the_interruption() -> (
    None
):
    class Asker(Stage):
        async def process(self, frame: Frame, direction: Direction) -> None:
            await self.push(frame, direction)
            if isinstance(frame, LLMTextFrame) and frame.text == "barge":
                self.request_interruption("test")
                self.push_nowait(LLMTextFrame(text="the new turn"))
                assert self.interruption_pending

    asker, rec = Asker(), Recorder()
    await run_stages(asker, rec, frames=[LLMTextFrame(text="barge")])
    # not cut by it (and the end, sent after "barge", follows it too)
    assert rec.seen[-3:] == ["InterruptionFrame", "the new turn", "EndFrame"]
    assert not asker.interruption_pending
