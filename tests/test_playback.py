"""Playback pacing and what-was-heard, on a virtual clock."""

from __future__ import annotations

import asyncio

import numpy as np

from tests.stagerun import StageRun, run_stages, until
from voice_agent.audio.playback import PlaybackStage, heard_text
from voice_agent.frames import (
    PCM,
    DuckOutputFrame,
    EndOfTurnFrame,
    TTSAudioFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserTurnFrame,
)


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class DeviceSink:
    """A sink that plays in real time and holds `latency_ms` of audio in its own buffer."""

    realtime = True

    def __init__(self, rate: int, latency_ms: float = 0.0) -> None:
        self.sample_rate = rate
        self.latency_ms = latency_ms
        self.writes: list[tuple[float, int]] = []
        self.clock: VirtualClock | None = None
        self.cleared = 0

    async def write(self, pcm: PCM) -> None:
        assert self.clock is not None
        self.writes.append((self.clock.now, len(pcm)))

    def buffered_ms(self) -> float:
        return self.latency_ms

    def clear(self) -> None:
        self.cleared += 1


def tone(ms: int, rate: int) -> PCM:
    return np.full(rate * ms // 1000, 1000, np.int16)


async def run_reply(
    sink: DeviceSink, clock: VirtualClock, chunks: list[tuple[int, str]], rate: int
) -> None:
    """Play one reply to the end (the `EndFrame` waits until the stage has played it all)."""
    audio = [TTSAudioFrame(pcm=tone(ms, rate), sample_rate=rate, text=text) for ms, text in chunks]
    await run_stages(
        PlaybackStage(sink, 20, clock=clock, sleep=clock.sleep),
        frames=[TTSStartedFrame(), *audio, TTSStoppedFrame()],
    )


async def test_frames_go_out_every_20_ms_of_samples_resampled_to_the_sink_rate() -> None:
    clock = VirtualClock()
    sink = DeviceSink(48000)
    sink.clock = clock
    await run_reply(sink, clock, [(500, "hello there"), (310, "friend")], rate=22050)
    assert all(n == 960 for _, n in sink.writes)  # 20 ms at 48 kHz, the last one padded
    assert len(sink.writes) == 41  # 810 ms -> 40.5 frames
    times = [t for t, _ in sink.writes]
    assert np.allclose(np.diff(times)[:39], 0.02)  # paced by samples, not by wall-clock guesses
    assert abs(clock.now - 0.81) < 1 / 22050  # within a sample of the source audio


async def test_a_stall_does_not_make_playback_burst_to_catch_up() -> None:
    clock = VirtualClock()
    sink = DeviceSink(16000)
    sink.clock = clock
    original_write = sink.write

    async def stalling_write(pcm: PCM) -> None:
        if len(sink.writes) == 10:
            clock.now += 1.0  # the event loop was blocked for a second
        await original_write(pcm)

    sink.write = stalling_write  # type: ignore[method-assign]
    await run_reply(sink, clock, [(1000, "one two three")], rate=16000)
    gaps = np.diff([t for t, _ in sink.writes])
    assert max(gaps) > 0.9 and sum(gaps < 0.001) <= 1  # at most one frame sent late, no burst


def test_heard_text_counts_the_played_share_of_each_chunk() -> None:
    chunks = [
        ("Once there was a fox.", 500, 500),
        ("It ran far away.", 200, 400),
        ("The end.", 0, 100),
    ]
    assert heard_text(chunks) == "Once there was a fox. It ran"
    assert heard_text([("a b c", 0, 300)]) == ""
    assert heard_text([("a b c", 299, 300)]) == "a b"
    assert heard_text([]) == ""


async def test_played_ms_subtracts_what_the_device_still_buffers() -> None:
    clock = VirtualClock()
    sink = DeviceSink(16000, latency_ms=60)
    sink.clock = clock
    stage = PlaybackStage(sink, 20, clock=clock, sleep=clock.sleep)
    stage._written = 16000 // 2  # 500 ms written
    assert stage.played_ms == 440


class LevelSink:
    """A sink that keeps every frame, as fast as it comes (for holds and levels)."""

    realtime = False

    def __init__(self, rate: int) -> None:
        self.sample_rate = rate
        self.frames: list[PCM] = []

    async def write(self, pcm: PCM) -> None:
        self.frames.append(pcm.copy())
        await asyncio.sleep(0)

    def buffered_ms(self) -> float:
        return 0.0

    def clear(self) -> None:
        pass


async def test_a_reply_waits_for_the_end_of_the_turn_it_answers() -> None:
    sink = LevelSink(16000)
    async with StageRun(PlaybackStage(sink, 20)) as run:
        run.send(
            UserTurnFrame(text="hi", turn=3),
            TTSStartedFrame(),
            TTSAudioFrame(pcm=tone(100, 16000), sample_rate=16000, text="hello"),
            EndOfTurnFrame(turn=2),  # an earlier turn's end does not release it
        )
        await until(lambda: "reply_held" in run.event_names)
        events = run.event_names
        assert sink.frames == [] and "reply_held" in events and "reply_audio_ready" in events
        run.send(EndOfTurnFrame(turn=3))
        await run.end()  # once the stage has played what it holds
    events = run.event_names
    assert len(sink.frames) == 5 and events.index("reply_released") > events.index("reply_held")


async def test_the_end_of_turn_may_come_before_its_reply() -> None:
    sink = LevelSink(16000)
    async with StageRun(PlaybackStage(sink, 20)) as run:
        await run.through(EndOfTurnFrame(turn=1))
        run.send(
            UserTurnFrame(text="hi", turn=1),
            TTSStartedFrame(),
            TTSAudioFrame(pcm=tone(60, 16000), sample_rate=16000, text="hello"),
        )
        await run.end()
    assert len(sink.frames) == 3


async def test_ducking_lowers_the_next_frames_smoothly_and_an_interruption_restores_the_level() -> (
    None
):
    sink = LevelSink(16000)
    gate = asyncio.Event()
    original_write = sink.write

    async def slow_write(pcm: PCM) -> None:
        await original_write(pcm)
        if len(sink.frames) == 2:
            await gate.wait()

    sink.write = slow_write  # type: ignore[method-assign]
    async with StageRun(PlaybackStage(sink, 20)) as run:
        run.send(
            TTSStartedFrame(),
            TTSAudioFrame(pcm=tone(200, 16000), sample_rate=16000, text="one two"),
        )
        await until(lambda: len(sink.frames) == 2)
        await run.through(DuckOutputFrame(db=24))
        gate.set()
        await until(lambda: len(sink.frames) == 10)  # the whole 200 ms
        levels = [float(np.max(np.abs(f.astype(np.int32)))) for f in sink.frames]
        assert levels[:2] == [1000, 1000]
        ramp = sink.frames[2].astype(np.int32)  # down over 5 ms
        assert ramp[0] == 1000 and np.all(np.diff(ramp[:80]) <= 0) and np.all(ramp[80:] < 100)
        assert all(abs(level - 1000 * 10 ** (-24 / 20)) < 2 for level in levels[3:])
        await run.interrupt("test")
        run.send(
            TTSStartedFrame(), TTSAudioFrame(pcm=tone(40, 16000), sample_rate=16000, text="again")
        )
        await run.end()  # once the stage has played it
    assert [float(np.max(np.abs(f))) for f in sink.frames[-2:]] == [1000, 1000]
