"""The local microphone and speaker: LocalTransport over a fake sound device, and `talk`
(voice_agent.talk).

`FakeSoundDevice` stands in for the sounddevice module: its streams never run by themselves;
a test calls `stream.tick(mic)` (from a thread, as PortAudio would, or from the loop) to run
one callback, and gets back what the callback handed to the speaker.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from tests.fakes import FakeASR, FakeLLM, FakeTTS, make_event, persona, settings
from voice_agent.audio.vad import VadEvent
from voice_agent.config import Settings
from voice_agent.engines import Engines
from voice_agent.executor import EngineExecutor
from voice_agent.frames import PCM, Frame, InputAudioFrame
from voice_agent.persona import PersonaStore
from voice_agent.pipeline import Pipeline
from voice_agent.protocol import WireEvents
from voice_agent.session import Session
from voice_agent.talk import TranscriptPrinter, talk
from voice_agent.transports import local
from voice_agent.transports.local import (
    DeviceError,
    Devices,
    LocalTransport,
    MicFrame,
    SpeakerEchoCancelStage,
    find_devices,
)

RATE = 16000
ASSISTANT = (  # as in test_echo.py, so that a test run synthesizes it once
    "Here is a fairly long answer about the weather, which keeps going for a while so that "
    "the echo canceller can converge."
)
BLOCK = 320  # 20 ms
MIC = {"name": "Fake mic", "index": 0, "max_input_channels": 1, "max_output_channels": 0}
SPEAKER = {"name": "Fake speaker", "index": 1, "max_input_channels": 0, "max_output_channels": 2}


class FakePortAudioError(Exception):
    pass


class Status:
    def __init__(self, overflow: bool = False) -> None:
        self.input_overflow = overflow
        self.output_underflow = False


class FakeStream:
    latency = (0.010, 0.030)

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.callback = kwargs["callback"]
        self.finished_callback = kwargs["finished_callback"]
        self.started = self.aborted = self.closed = 0

    def start(self) -> None:
        self.started += 1

    def abort(self) -> None:
        self.aborted += 1
        self.finished_callback()  # as PortAudio does when a stream stops

    def close(self) -> None:
        self.closed += 1

    def tick(self, mic: PCM, *, overflow: bool = False) -> PCM:
        """One callback: `mic` in; what was handed to the speaker out."""
        out = bytearray(len(mic) * 2)
        self.callback(mic.astype(np.int16).tobytes(), out, len(mic), None, Status(overflow))
        return np.frombuffer(bytes(out), np.int16).copy()


class FakeSoundDevice:
    """The parts of the sounddevice module that `local` uses."""

    PortAudioError = FakePortAudioError

    def __init__(
        self,
        devices: list[dict[str, Any]] | None = None,
        default: tuple[int, int] = (0, 1),
        rates: tuple[int, ...] = (16000, 48000),
    ) -> None:
        self.devices = [MIC, SPEAKER] if devices is None else devices
        self.default = dict(zip(("input", "output"), default, strict=True))
        self.rates = rates
        self.streams: list[FakeStream] = []

    def query_devices(self, device: int | None = None, kind: str | None = None) -> Any:
        if kind is None:
            return [{"default_samplerate": 48000.0, **d} for d in self.devices]
        index = self.default[kind]
        if index < 0:
            raise FakePortAudioError(f"Error querying device {index}")
        return {"default_samplerate": 48000.0, **self.devices[index]}

    def query_hostapis(self) -> tuple[dict[str, Any], ...]:
        return ({"name": "ALSA"},)

    def check_input_settings(self, device: int, **kw: Any) -> None:
        self._check(kw["samplerate"])

    def check_output_settings(self, device: int, **kw: Any) -> None:
        self._check(kw["samplerate"])

    def _check(self, rate: int) -> None:
        if rate not in self.rates:
            raise FakePortAudioError("Invalid sample rate")

    def RawStream(self, **kwargs: Any) -> FakeStream:
        stream = FakeStream(**kwargs)
        self.streams.append(stream)
        return stream


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def block(value: int, n: int = BLOCK) -> PCM:
    return np.full(n, value, np.int16)


def in_thread(fn: Callable[[], None]) -> None:
    """Run `fn` on another thread (as PortAudio runs callbacks) and wait for it."""
    t = threading.Thread(target=fn)
    t.start()
    t.join(5)
    assert not t.is_alive()


async def take(transport: LocalTransport, n: int) -> list[MicFrame]:
    frames: list[MicFrame] = []

    async def read() -> None:
        async for f in transport.frames():
            assert isinstance(f, MicFrame)
            frames.append(f)
            if len(frames) == n:
                return

    await asyncio.wait_for(read(), 5)
    return frames


def opened(sd: FakeSoundDevice | None = None, **kw: Any) -> tuple[LocalTransport, FakeStream]:
    sd = sd or FakeSoundDevice()
    transport = LocalTransport(RATE, sd=sd, **kw)
    transport.open()
    return transport, sd.streams[-1]


# --- microphone --------------------------------------------------------------------------------


async def test_microphone_blocks_arrive_as_frames_in_order() -> None:
    transport, stream = opened()
    assert stream.kwargs["samplerate"] == RATE and stream.kwargs["blocksize"] == BLOCK
    assert stream.kwargs["device"] == (0, 1) and stream.started == 1
    in_thread(lambda: [stream.tick(block(i)) for i in range(10)])
    frames = await take(transport, 10)
    assert [int(f.pcm[0]) for f in frames] == list(range(10))
    assert all(len(f.pcm) == BLOCK and f.sample_rate == RATE and not f.gap for f in frames)
    assert transport.dropped == 0
    await transport.close()


async def test_a_slow_loop_loses_the_oldest_blocks_counted_and_marks_the_gap() -> None:
    transport, stream = opened(max_queued_ms=100)  # 5 blocks
    in_thread(lambda: [stream.tick(block(i)) for i in range(8)])
    frames = await take(transport, 5)
    assert [int(f.pcm[0]) for f in frames] == [3, 4, 5, 6, 7]
    assert transport.dropped == 3
    assert [f.gap for f in frames] == [True, False, False, False, False]
    in_thread(lambda: stream.tick(block(8), overflow=True))  # PortAudio lost input itself
    (frame,) = await take(transport, 1)
    assert frame.gap and transport.overflows == 1
    await transport.close()


async def test_one_wake_up_at_a_time_reaches_the_loop() -> None:
    transport, stream = opened()
    loop = asyncio.get_running_loop()
    calls = 0
    real = loop.call_soon_threadsafe

    def counting(fn: Any, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(fn, *args)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        in_thread(lambda: [stream.tick(block(i)) for i in range(20)])
    finally:
        del loop.call_soon_threadsafe
    assert calls == 1
    assert len(await take(transport, 20)) == 20
    await transport.close()


# --- speaker -----------------------------------------------------------------------------------


async def test_the_output_callback_plays_what_was_written_in_order_then_silence() -> None:
    transport, stream = opened()
    for v in (1, 2, 3):
        await transport.sink.write(block(v))
    outs: list[PCM] = []
    in_thread(lambda: outs.extend(stream.tick(block(0)) for _ in range(5)))
    assert [int(o[0]) for o in outs] == [1, 2, 3, 0, 0]
    assert all(len(o) == BLOCK and np.all(o == o[0]) for o in outs)
    # each microphone frame carries exactly what was played during its callback
    frames = await take(transport, 5)
    assert all(np.array_equal(f.played, o) for f, o in zip(frames, outs, strict=True))
    assert all(f.played_rate == RATE for f in frames)
    await transport.close()


async def test_a_frame_split_across_callbacks_plays_whole() -> None:
    transport, stream = opened()
    ramp = np.arange(1, 2 * BLOCK + 1, dtype=np.int16)
    await transport.sink.write(ramp)
    half = [stream.tick(block(0, BLOCK // 2)) for _ in range(5)]
    assert np.array_equal(np.concatenate(half)[: len(ramp)], ramp)
    assert not np.any(np.concatenate(half)[len(ramp) :])
    await transport.close()


async def test_buffered_ms_counts_the_sink_and_what_portaudio_has_not_played_yet() -> None:
    clock = Clock()
    transport, stream = opened(clock=clock)
    sink = transport.sink
    assert sink.buffered_ms() == 0.0
    for v in (1, 2, 3):
        await sink.write(block(v))
    assert sink.buffered_ms() == pytest.approx(60.0)
    stream.tick(block(0))  # 20 ms handed to PortAudio, 30 ms of output latency ahead of it
    assert sink.buffered_ms() == pytest.approx(40.0 + 30.0 + 20.0)
    clock.now += 0.035
    assert sink.buffered_ms() == pytest.approx(40.0 + 15.0)
    clock.now += 1.0
    assert sink.buffered_ms() == pytest.approx(40.0)
    stream.tick(block(0))
    stream.tick(block(0))
    clock.now += 1.0
    assert sink.buffered_ms() == 0.0
    stream.tick(block(0))  # silence does not count
    assert sink.buffered_ms() == 0.0
    await transport.close()


async def test_write_waits_for_room_which_the_callback_makes() -> None:
    transport, stream = opened()
    for v in (1, 2, 3):
        await asyncio.wait_for(transport.sink.write(block(v)), 1)  # 60 ms: no wait
    fourth = asyncio.ensure_future(transport.sink.write(block(4)))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not fourth.done()
    in_thread(lambda: stream.tick(block(0)))
    await asyncio.wait_for(fourth, 1)
    outs = [stream.tick(block(0)) for _ in range(4)]
    assert [int(o[0]) for o in outs] == [2, 3, 4, 0]
    await transport.close()


async def test_clear_drops_what_was_not_played_and_frees_a_waiting_writer() -> None:
    clock = Clock()
    transport, stream = opened(clock=clock)
    sink = transport.sink
    for v in (1, 2, 3):
        await sink.write(block(v))
    stream.tick(block(0))
    await sink.write(block(4))
    waiting = asyncio.ensure_future(sink.write(block(5)))
    await asyncio.sleep(0)
    assert not waiting.done()
    sink.clear()
    assert sink.buffered_ms() == pytest.approx(30.0 + 20.0)  # PortAudio still has its 20 ms
    await asyncio.wait_for(waiting, 1)
    outs = [int(stream.tick(block(0))[0]) for _ in range(2)]
    assert outs == [5, 0]  # 2, 3 and 4 are gone
    await transport.close()


async def test_device_rate_is_resampled_both_ways() -> None:
    sd = FakeSoundDevice(rates=(48000,))
    devices = find_devices(sd, RATE)
    assert devices.sample_rate == 48000
    transport, stream = opened(sd)
    assert stream.kwargs["samplerate"] == 48000 and stream.kwargs["blocksize"] == 960
    t = np.arange(48000) / 48000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    for i in range(50):
        stream.tick(tone[i * 960 : (i + 1) * 960])
    frames = await take(transport, 48)
    assert all(len(f.pcm) == BLOCK and f.played_rate == 48000 for f in frames)
    mic = np.concatenate([f.pcm for f in frames]).astype(np.float64)
    rms = np.sqrt(np.mean(mic[3200:] ** 2))
    assert rms == pytest.approx(8000 / np.sqrt(2), rel=0.05)  # the tone came through at 16 kHz
    for _ in range(3):  # as much as the sink holds: 60 ms at 48 kHz
        await asyncio.wait_for(transport.sink.write(block(1000)), 1)
    played = np.concatenate([stream.tick(block(0, 960)) for _ in range(3)])
    assert len(played) == 2880 and np.count_nonzero(played) > 2000
    await transport.close()


# --- echo cancellation -------------------------------------------------------------------------


class RecordingCanceller:
    """Stands in for EchoCanceller: records the order of calls, returns the audio unchanged."""

    sample_rate = RATE

    def __init__(self) -> None:
        self.calls: list[tuple[str, PCM | None]] = []
        self.stats = None

    def far_end(self, pcm: PCM, rate: int) -> None:
        assert rate == RATE
        self.calls.append(("far", pcm.copy()))

    def resync(self) -> None:
        self.calls.append(("resync", None))

    def process(self, near: PCM) -> PCM:
        self.calls.append(("near", near.copy()))
        return near


async def run_stage(stage: SpeakerEchoCancelStage, frames: list[MicFrame]) -> list[Frame]:
    out: list[Frame] = []
    done = asyncio.Event()

    def collect(frame: Frame) -> None:
        if isinstance(frame, InputAudioFrame):
            out.append(frame)
            if len(out) == len(frames):
                done.set()

    pipeline = Pipeline([stage], on_downstream=collect)
    await pipeline.start()
    for f in frames:
        pipeline.queue(f)
    await asyncio.wait_for(done.wait(), 5)
    await pipeline.stop()
    return out


async def test_the_far_end_gets_exactly_what_was_played_just_before_its_microphone_audio() -> None:
    transport, stream = opened(max_queued_ms=100)
    for v in range(1, 7):
        await transport.sink.write(block(v))
        in_thread(lambda v=v: stream.tick(block(100 + v)))
    played: list[PCM] = []
    in_thread(lambda: played.extend(stream.tick(block(200 + i)) for i in range(4)))  # a burst
    frames = await take(transport, 5)  # the first 5 of 10 were dropped: the loop was late
    canceller = RecordingCanceller()
    out = await run_stage(SpeakerEchoCancelStage(canceller), frames)  # type: ignore[arg-type]

    assert [c[0] for c in canceller.calls] == ["resync", "far", "near"] + ["far", "near"] * 4
    fars = [pcm for kind, pcm in canceller.calls if kind == "far"]
    nears = [pcm for kind, pcm in canceller.calls if kind == "near"]
    assert [int(p[0]) for p in fars] == [6, 0, 0, 0, 0]
    assert all(np.array_equal(a, b) for a, b in zip(fars[1:], played, strict=True))
    assert [int(p[0]) for p in nears] == [106, 200, 201, 202, 203]
    assert all(type(f) is InputAudioFrame for f in out)  # the played audio stays behind
    await transport.close()


def noise_speech(seconds: float, seed: int) -> PCM:
    """Speech-like noise: low-passed noise in bursts (syllables, 3 a second)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    noise = np.convolve(rng.standard_normal(n), np.ones(4) / 4, "same")
    envelope = np.clip(np.sin(2 * np.pi * 3 * np.arange(n) / RATE), 0, None)
    return (8000 * noise * envelope).astype(np.int16)


async def test_aec3_cancels_the_echo_through_the_transport_whatever_the_bursts() -> None:
    pytest.importorskip("pywebrtc_audio")
    from tests.speech import speech_16k
    from voice_agent.audio.echo import EchoCanceller

    # The room: the microphone block of callback k holds the echo of the block played in
    # callback k - 3 (60 ms of device latency and air), 8 dB down, plus a noise floor.
    transport, stream = opened(output_buffer_ms=10_000, max_queued_ms=200)  # 10 blocks
    await transport.sink.write(speech_16k(ASSISTANT))  # 6 s of Piper's voice
    canceller = EchoCanceller(RATE)
    processed, sent = 0, 0
    all_in = asyncio.Event()

    def count(frame: Frame) -> None:
        nonlocal processed
        processed += isinstance(frame, InputAudioFrame)
        if processed == sent:
            all_in.set()

    pipeline = Pipeline([SpeakerEchoCancelStage(canceller)], on_downstream=count)
    await pipeline.start()
    rng = np.random.default_rng(2)
    history = [block(0)] * 3
    reader = transport.frames()
    for burst in range(66):  # 5 callbacks at a time; every 12th burst the loop is 0.2 s late
        ticks = 10 if burst % 12 == 11 else 5
        for _ in range(ticks):
            echo = history[-3].astype(np.float64) * 10 ** (-8 / 20)
            mic = np.clip(echo + rng.standard_normal(BLOCK) * 30, -32768, 32767)
            history.append(stream.tick(mic.astype(np.int16)))
        for _ in range(ticks):  # the whole burst reaches the loop at once
            pipeline.queue(await anext(reader))
            sent += 1
    await asyncio.wait_for(all_in.wait(), 5)
    await pipeline.stop()
    await reader.aclose()
    assert transport.dropped == 0
    assert canceller.stats.far_active_frames > 300
    # measured 27 dB; 4 dB with the far end paired 80 ms late (its echo 20 ms ahead of it)
    assert canceller.stats.erle_db > 20
    await transport.close()


# --- the stream's life -------------------------------------------------------------------------


async def test_close_stops_and_closes_the_stream_ends_frames_and_is_idempotent() -> None:
    transport, stream = opened()
    reader = asyncio.ensure_future(take(transport, 1))
    await asyncio.sleep(0)
    await transport.sink.write(block(1))
    await transport.sink.write(block(2))
    await transport.sink.write(block(3))
    writer = asyncio.ensure_future(transport.sink.write(block(4)))
    await asyncio.sleep(0)
    await transport.close()
    await transport.close()
    transport.shutdown()
    assert (stream.aborted, stream.closed) == (1, 1)
    assert await reader == []  # frames() ended
    await asyncio.wait_for(writer, 1)
    await asyncio.wait_for(transport.sink.write(block(5)), 1)  # goes nowhere, at once
    assert not transport.lost


async def test_a_stream_that_stops_by_itself_ends_the_input() -> None:
    transport, stream = opened()
    stream.finished_callback()  # the device went away
    assert await take_all(transport) == []
    assert transport.lost
    await transport.close()
    assert stream.closed == 1


async def take_all(transport: LocalTransport) -> list[Frame]:
    async def read() -> list[Frame]:
        return [f async for f in transport.frames()]

    return await asyncio.wait_for(read(), 5)


async def test_an_error_in_the_callback_plays_silence_and_is_counted() -> None:
    transport, stream = opened()
    out = bytearray(b"\x01" * 2 * BLOCK)
    stream.callback(b"\x00" * 10, out, BLOCK, None, None)  # a short input, no status
    assert transport.callback_errors == 1 and not any(out)
    await transport.close()


async def test_a_stream_portaudio_refuses_is_a_device_error() -> None:
    class Refusing(FakeSoundDevice):
        def RawStream(self, **kwargs: Any) -> FakeStream:
            raise FakePortAudioError("Device unavailable")

    transport = LocalTransport(RATE, sd=Refusing())
    with pytest.raises(DeviceError, match="cannot open 'Fake mic' and 'Fake speaker' at 16000"):
        transport.open()


# --- finding devices ---------------------------------------------------------------------------


def test_no_device_at_all_says_what_portaudio_sees() -> None:
    with pytest.raises(DeviceError) as err:
        find_devices(FakeSoundDevice(devices=[], default=(-1, -1)), RATE)
    assert str(err.value) == (
        "no microphone and no speaker to talk through: PortAudio sees no audio device "
        "(host APIs: ALSA)"
    )


def test_no_microphone_lists_the_devices_there_are() -> None:
    with pytest.raises(DeviceError) as err:
        find_devices(FakeSoundDevice(devices=[SPEAKER], default=(-1, 0)), RATE)
    assert str(err.value) == (
        "no microphone to talk through: PortAudio sees 1 device(s): 'Fake speaker' (0 in, 2 out)"
    )


def test_devices_that_take_neither_rate_are_refused() -> None:
    with pytest.raises(DeviceError, match="take neither 16000 nor 48000 Hz"):
        find_devices(FakeSoundDevice(rates=(44100,)), RATE)


def test_the_pipeline_rate_is_used_when_the_devices_take_it() -> None:
    assert find_devices(FakeSoundDevice(), RATE) == Devices(0, 1, "Fake mic", "Fake speaker", RATE)


# --- a whole conversation ----------------------------------------------------------------------


class LoudnessVAD:
    """A VoiceActivity stand-in: a 512-sample window above ~-30 dBFS is speech; speech stops
    after 320 ms of quiet."""

    def __init__(self) -> None:
        self.samples = 0
        self.speaking = False
        self._left = np.zeros(0, np.int16)
        self._pos = self._speech_end = 0

    def feed(self, pcm: PCM) -> list[VadEvent]:
        self.samples += len(pcm)
        buf = np.concatenate([self._left, pcm])
        events: list[VadEvent] = []
        while len(buf) >= 512:
            window, buf = buf[:512], buf[512:]
            start, self._pos = self._pos, self._pos + 512
            loud = np.sqrt(np.mean(window.astype(np.float64) ** 2)) > 1000
            if loud:
                if not self.speaking:
                    self.speaking = True
                    events += [
                        VadEvent("onset", self._pos),
                        VadEvent("started", self._pos, onset_sample=start),
                    ]
                self._speech_end = self._pos
            elif self.speaking and self._pos - self._speech_end >= 5120:
                self.speaking = False
                events.append(VadEvent("stopped", self._pos, speech_end_sample=self._speech_end))
        self._left = buf
        return events


GREETING_GAP_BLOCKS = 10
"""Blocks of silence after sound that end the greeting, for a person who waits for it."""


class Device(threading.Thread):
    """PortAudio's thread for a whole conversation: a callback every 2 ms (10x real time);
    the person says `speech` (once the greeting is over, if `greeted`), then the microphone
    hears silence. Sets `heard` once the speaker has played `expect` non-zero samples after
    the greeting; `then` runs once after that."""

    def __init__(self, sd: FakeSoundDevice, speech: PCM, expect: int, greeted: bool = False):
        super().__init__(daemon=True)
        self.sd, self.speech, self.expect = sd, speech, expect
        self.out: list[PCM] = []
        self.greeting_blocks: int | None = None if greeted else 0
        """How many blocks the greeting took, once it is over."""
        self.sounding = 0
        """Non-zero samples played so far, after the greeting."""
        self.heard = threading.Event()
        self.stop = threading.Event()
        self.then: Callable[[], None] | None = None
        self._ticked = threading.Condition()

    def run(self) -> None:
        while not self.sd.streams and not self.stop.wait(0.002):
            pass
        stream, pos, quiet = self.sd.streams[-1], 0, 0
        while not self.stop.wait(0.002) and not stream.aborted:
            mic = self.speech[pos : pos + BLOCK] if self.greeting_blocks is not None else []
            pos += len(mic)
            out = stream.tick(np.pad(mic, (0, BLOCK - len(mic))))
            with self._ticked:
                self.out.append(out)
                if self.greeting_blocks is not None:
                    self.sounding += np.count_nonzero(out)
                elif np.any(out) or (quiet and quiet < GREETING_GAP_BLOCKS):
                    quiet = quiet + 1 if not np.any(out) else 1
                elif quiet:
                    self.greeting_blocks = len(self.out)
                self._ticked.notify_all()
            if not self.heard.is_set() and self.sounding >= self.expect:
                self.heard.set()
                if self.then is not None:
                    self.then()

    def wait_ticks(self, n: int) -> None:
        """Until `n` more callbacks have run."""
        with self._ticked:
            target = len(self.out) + n
            assert self._ticked.wait_for(lambda: len(self.out) >= target, 5)

    @property
    def played(self) -> PCM:
        """What the speaker played after the greeting."""
        with self._ticked:
            out = self.out[self.greeting_blocks or 0 :]
            return np.concatenate(out) if out else np.zeros(0, np.int16)


def fake_engines(asr: FakeASR, llm: FakeLLM, tts: FakeTTS) -> Engines:
    return Engines(
        asr=asr,
        llm=llm,
        tts={"piper": tts},
        executor=EngineExecutor(workers=2),
        vad=LoudnessVAD,  # type: ignore[arg-type]
    )


REPLY = "It is noon."


def reply_audio() -> PCM:
    return FakeTTS().synthesize(REPLY, persona().voice)


def assert_played_whole(played: PCM, expected: PCM) -> None:
    start = int(np.flatnonzero(played)[0]) - 1  # the sine starts on a zero sample
    assert np.array_equal(played[start : start + len(expected)], expected)
    assert not np.any(played[start + len(expected) :])


@pytest.fixture
def speech() -> PCM:
    return np.concatenate([noise_speech(0.6, seed=3), np.zeros(RATE // 10, np.int16)])


async def test_a_session_over_the_local_transport_answers_through_the_speaker(
    speech: PCM,
) -> None:
    sd = FakeSoundDevice()
    expected = reply_audio()
    device = Device(sd, speech, np.count_nonzero(expected))
    asr, llm, tts = FakeASR(["what time is it"]), FakeLLM([REPLY]), FakeTTS()
    engines = fake_engines(asr, llm, tts)
    transport = LocalTransport(RATE, sd=sd, max_queued_ms=10_000)
    device.start()
    try:
        async with Session(settings(), persona(), transport, engines) as session:
            events = session.events()
            await asyncio.wait_for(asyncio.to_thread(device.heard.wait, 10), 11)
            assert device.heard.is_set()
            session.close()
            await asyncio.wait_for(session.run(), 5)
        kinds = [e.type async for e in events]
    finally:
        device.stop.set()
        device.join(5)
        engines.executor.shutdown()
    assert tts.spoken == [REPLY]
    assert_played_whole(device.played, expected)
    assert "user_started_speaking" in kinds and "bot_stopped_speaking" in kinds
    assert (sd.streams[0].aborted, sd.streams[0].closed) == (1, 1)


async def test_a_barge_in_stops_the_speaker_at_once_and_counts_only_what_was_played(
    speech: PCM,
) -> None:
    sd = FakeSoundDevice()
    story = " ".join(["word"] * 30) + "."  # 3 s of speech
    device = Device(sd, speech, RATE // 2)  # `heard` after half a second of the reply
    engines = fake_engines(FakeASR(["tell me a story"]), FakeLLM([story]), FakeTTS())
    transport = LocalTransport(RATE, sd=sd, max_queued_ms=10_000)
    device.start()
    try:
        async with Session(settings(), persona(), transport, engines) as session:
            events = session.events()
            await asyncio.wait_for(asyncio.to_thread(device.heard.wait, 10), 11)
            session.pipeline.interrupt("test barge-in")
            report = await next_event(events, "playback_interrupted")
            sounding_then = device.sounding
            await asyncio.to_thread(device.wait_ticks, 10)
            session.close()
            await asyncio.wait_for(session.run(), 5)
    finally:
        device.stop.set()
        device.join(5)
        engines.executor.shutdown()
    played_ms = 1000 * device.sounding / RATE
    assert device.sounding - sounding_then <= BLOCK  # at most the frame being pulled
    # what PortAudio was given in the last 50 ms (30 ms latency + a 20 ms block) counts as
    # not played yet: the fake device "plays" it at once, so played_ms is short by about that
    assert 20 <= played_ms - float(report["played_ms"]) <= 80
    words = str(report["heard"]).split()
    assert words and len(words) <= float(report["played_ms"]) / 100 + 1


async def next_event(events: Any, kind: str) -> dict[str, Any]:
    async def find() -> dict[str, Any]:
        async for e in events:
            if e.type == kind:
                return e.data
        raise AssertionError(f"no {kind!r} event")

    return await asyncio.wait_for(find(), 5)


# --- talk --------------------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def show(p: TranscriptPrinter, wire: WireEvents, kind: str, data: dict[str, Any]) -> None:
    """What the session would send the printer for one of its events."""
    for message in wire.translate(make_event(kind, **data)):
        p.show(message)


def test_the_printer_shows_partials_in_place_and_replies_as_heard() -> None:
    out, err = Tty(), io.StringIO()
    p, wire = TranscriptPrinter(out, err, live=True), WireEvents()
    for kind, data in [
        ("transcript", {"role": "user", "text": "what", "final": False}),
        ("transcript", {"role": "user", "text": "what time", "final": False}),
        ("transcript", {"role": "user", "text": "what time is it", "final": True}),
        ("tts_chunk", {"text": "It is noon."}),
        ("bot_started_speaking", {}),
        ("tts_chunk", {"text": "Have lunch."}),
        ("bot_stopped_speaking", {}),
        ("tts_chunk", {"text": "A cancelled reply."}),
        ("playback_interrupted", {"heard": "", "played_ms": 0}),
        ("tts_chunk", {"text": "Once upon a time."}),
        ("bot_started_speaking", {}),
        ("playback_interrupted", {"heard": "Once upon", "played_ms": 500}),
        ("error", {"source": "llm", "message": "model fell over", "fatal": False}),
    ]:
        show(p, wire, kind, data)
    assert out.getvalue() == (
        "\r\033[Kyou: what…\r\033[Kyou: what time…\r\033[Kyou: what time is it\n"
        "assistant: It is noon. Have lunch.\n"
        "assistant: Once upon … (interrupted)\n"
    )
    assert err.getvalue() == "error: model fell over\n"
    assert p.fatal is None
    show(p, wire, "error", {"source": "transport", "message": "gone", "fatal": True})
    assert p.fatal == "gone"


def test_the_printer_shows_only_finals_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    p, wire = TranscriptPrinter(out, io.StringIO(), live=False), WireEvents()
    show(p, wire, "transcript", {"role": "user", "text": "hel", "final": False})
    show(p, wire, "transcript", {"role": "user", "text": "hello", "final": True})
    assert out.getvalue() == "you: hello\n"


@pytest.fixture
def no_engine_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("engines were loaded")

    monkeypatch.setattr("voice_agent.engines.load_engines", refuse)


@pytest.mark.usefixtures("no_engine_loading")
def test_talk_without_sounddevice_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    out, err = io.StringIO(), io.StringIO()
    assert talk(Settings(), out=out, err=err) == 1
    message = err.getvalue()
    assert message.count("\n") == 1 and message.startswith("voice-agent talk: cannot use")
    assert "apt-get install libportaudio2" in message and "voice-agent[local]" in message
    assert out.getvalue() == ""


@pytest.mark.usefixtures("no_engine_loading")
def test_talk_with_an_unknown_persona_says_which_there_are() -> None:
    err = io.StringIO()
    assert talk(Settings(), "nobody", sd=FakeSoundDevice(), err=err) == 1
    assert err.getvalue().startswith("voice-agent talk: unknown persona 'nobody'; known: ")


@pytest.mark.usefixtures("no_engine_loading")
def test_talk_on_this_machine_without_a_sound_card_fails_at_once_with_what_it_found() -> None:
    sd = pytest.importorskip("sounddevice")
    if len(sd.query_devices()) > 0:
        pytest.skip("this machine has audio devices")
    out, err = io.StringIO(), io.StringIO()
    assert talk(Settings(), out=out, err=err) == 1
    assert err.getvalue() == (
        "voice-agent talk: no microphone and no speaker to talk through: PortAudio sees no "
        f"audio device (host APIs: {', '.join(a['name'] for a in sd.query_hostapis())})\n"
    )
    assert out.getvalue() == ""


@pytest.fixture
def sigint_restored() -> Iterator[None]:
    before = signal.getsignal(signal.SIGINT)
    yield
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.usefixtures("sigint_restored")
@pytest.mark.parametrize("echo_cancellation", [True, False])
def test_talk_converses_until_ctrl_c_then_closes_everything(
    speech: PCM, echo_cancellation: bool
) -> None:
    if echo_cancellation:
        pytest.importorskip("pywebrtc_audio")
    sd = FakeSoundDevice()
    expected = reply_audio()
    device = Device(sd, speech, np.count_nonzero(expected), greeted=True)
    device.then = lambda: os.kill(os.getpid(), signal.SIGINT)  # the person presses Ctrl-C
    engines = fake_engines(FakeASR(["what time is it"]), FakeLLM([REPLY]), FakeTTS())
    s = Settings.model_validate(
        {"audio": {"echo_cancellation": echo_cancellation}, "turns": {"smart_turn": False}}
    )
    out, err = io.StringIO(), io.StringIO()
    device.start()
    try:
        code = talk(s, "concierge", sd=sd, engines=engines, out=out, err=err)
    finally:
        device.stop.set()
        device.join(5)
        engines.executor.shutdown()
    assert code == 0, err.getvalue()
    greeting = f"assistant: {PersonaStore(s.personas.dirs).get('concierge').greeting}\n"
    assert out.getvalue() == f"{greeting}you: what time is it\nassistant: {REPLY}\n"
    assert err.getvalue().startswith("voice-agent talk: Ada is listening")
    assert f"echo cancellation {'on' if echo_cancellation else 'off'}" in err.getvalue()
    assert device.heard.is_set()
    assert_played_whole(device.played, expected)
    (stream,) = sd.streams
    assert (stream.aborted, stream.closed) == (1, 1)


def test_the_module_stays_importable_without_sounddevice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(DeviceError):
        local.import_sounddevice()
