"""Playback pacing and what-was-heard, on a virtual clock."""

from __future__ import annotations

import asyncio

import numpy as np

from voice_agent.audio.playback import PlaybackStage, heard_text
from voice_agent.frames import PCM, TTSAudioFrame, TTSStartedFrame, TTSStoppedFrame
from voice_agent.pipeline import Pipeline


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

    async def write(self, pcm: PCM) -> None:
        assert self.clock is not None
        self.writes.append((self.clock.now, len(pcm)))

    def buffered_ms(self) -> float:
        return self.latency_ms


def tone(ms: int, rate: int) -> PCM:
    return np.full(rate * ms // 1000, 1000, np.int16)


async def run_reply(
    sink: DeviceSink, clock: VirtualClock, chunks: list[tuple[int, str]], rate: int
) -> PlaybackStage:
    stage = PlaybackStage(sink, 20, clock=clock, sleep=clock.sleep)
    p = Pipeline([stage])
    await p.start()
    p.queue(TTSStartedFrame())
    for ms, text in chunks:
        p.queue(TTSAudioFrame(pcm=tone(ms, rate), sample_rate=rate, text=text))
    p.queue(TTSStoppedFrame())
    for _ in range(2000):
        await asyncio.sleep(0)
        if not stage.speaking and sink.writes:
            break
    await p.stop()
    return stage


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
