"""Talking through the local microphone and speaker: `voice-agent talk` (sounddevice / PortAudio).

One full-duplex PortAudio stream runs at the pipeline's rate (16 kHz mono int16), or at the
speaker's default rate when the devices refuse that, resampled both ways (soxr, streaming). Its
callback runs on PortAudio's thread every 20 ms, and never blocks or waits for the event loop:

- it pulls the next 20 ms from the `SpeakerSink` (silence when that is empty) and hands it to
  the device;
- it puts the microphone's block, together with the block it has just played, in a bounded
  queue (the oldest dropped and counted when the loop falls 1 s behind) and wakes the loop with
  `call_soon_threadsafe`, at most one wake-up pending at a time.

`LocalTransport.frames()` turns the blocks into 20 ms `MicFrame`s: `InputAudioFrame`s that also
carry what the speaker played during the same callback. `SpeakerEchoCancelStage` hands that to
`EchoCanceller.far_end` (which is not thread-safe) right before it cancels the frame's echo, so
the far end and the microphone reach AEC3 in lockstep however late, or in whatever bursts, the
loop gets to them. (Fed as the blocks arrive, a burst would put far audio ahead of the
microphone audio it goes with: harmless while the canceller pairs them in order, but at a resync
it would pair the microphone with audio played after it was captured.) The played block leaves
the speaker a little after the microphone block of the same callback was captured (the stream's
input plus output latency: with `latency="low"`, some tens of ms), so the echo always comes
after its reference, well inside the 0-500 ms in which AEC3 finds it. A frame after lost audio
(an input overflow, or blocks dropped from the queue) is marked `gap`, and the stage resyncs the
canceller there.

The sink is not `realtime`: the device's clock paces the reply (paced by the loop's clock, it
would drift from the device's: gaps, or a growing delay). `write` waits while the sink would
hold more than `OUTPUT_BUFFER_MS` (60 ms: the callback takes 20 ms at a time, and the loop has
40 ms to top it up), so an interruption has little to drop (`clear`). `buffered_ms` counts what
the sink holds plus what PortAudio has been given and not yet played (its output latency), so
`played_ms` is what really left the speaker (give or take the ~10 ms a resampler holds, when
the speaker does not take 16 kHz).

`voice_agent.talk` is the command that uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from voice_agent.audio.echo import EchoCancelStage
from voice_agent.frames import PCM, Direction, Frame, InputAudioFrame
from voice_agent.transports.base import Transport

log = logging.getLogger(__name__)

FRAME_MS = 20
OUTPUT_BUFFER_MS = 60
"""Audio the sink holds before `write` waits (see the module docstring)."""
MAX_QUEUED_MS = 1000
"""Microphone audio waiting for the event loop; past that the oldest is dropped."""
INSTALL = "apt-get install libportaudio2 and pip install 'voice-agent[local]'"


class DeviceError(RuntimeError):
    """No usable microphone or speaker; the message says what was found."""


def import_sounddevice() -> Any:
    """The sounddevice module, or a DeviceError that says what to install."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the PortAudio library itself is missing
        raise DeviceError(f"cannot use the sound card ({exc}): {INSTALL}") from None
    return sounddevice


@dataclass(frozen=True, slots=True)
class Devices:
    """The microphone and speaker to open, and the rate they take."""

    input: int
    output: int
    input_name: str
    output_name: str
    sample_rate: int


def _seen(sd: Any, devices: list[dict[str, Any]]) -> str:
    if not devices:
        apis = ", ".join(str(api["name"]) for api in sd.query_hostapis())
        return f"PortAudio sees no audio device (host APIs: {apis or 'none'})"
    shown = ", ".join(
        f"{d['name']!r} ({d['max_input_channels']} in, {d['max_output_channels']} out)"
        for d in devices[:6]
    )
    more = f" and {len(devices) - 6} more" if len(devices) > 6 else ""
    return f"PortAudio sees {len(devices)} device(s): {shown}{more}"


def find_devices(sd: Any, sample_rate: int) -> Devices:
    """The default microphone and speaker, at `sample_rate` if they take it, else at the
    speaker's default rate; a DeviceError saying what was found when there is none."""
    try:
        devices = [dict(d) for d in sd.query_devices()]
    except sd.PortAudioError as exc:
        raise DeviceError(f"PortAudio cannot list the audio devices: {exc}") from None
    found: dict[str, dict[str, Any] | None] = {}
    for kind in ("input", "output"):
        try:
            found[kind] = dict(sd.query_devices(kind=kind))
        except (sd.PortAudioError, ValueError):  # no default device: PortAudio's -1
            found[kind] = None
    mic, speaker = found["input"], found["output"]
    if mic is None or speaker is None:
        missing = " and no ".join(
            what for what, dev in (("microphone", mic), ("speaker", speaker)) if dev is None
        )
        raise DeviceError(f"no {missing} to talk through: {_seen(sd, devices)}")
    ids = (int(mic["index"]), int(speaker["index"]))
    rates = [sample_rate, round(float(speaker["default_samplerate"]))]
    problem = None
    for rate in dict.fromkeys(rates):
        try:
            sd.check_input_settings(ids[0], channels=1, dtype="int16", samplerate=rate)
            sd.check_output_settings(ids[1], channels=1, dtype="int16", samplerate=rate)
        except (sd.PortAudioError, ValueError) as exc:
            problem = exc
            continue
        return Devices(*ids, str(mic["name"]), str(speaker["name"]), rate)
    raise DeviceError(
        f"{mic['name']!r} and {speaker['name']!r} take neither {' nor '.join(map(str, rates))} Hz "
        f"mono 16-bit audio: {problem}"
    )


@dataclass(slots=True, kw_only=True)
class MicFrame(InputAudioFrame):
    """Microphone audio, with what the speaker played during the same callback(s)."""

    played: PCM
    played_rate: int
    gap: bool = False
    """Microphone audio was lost just before this frame (an overflow, or dropped blocks)."""


class SpeakerEchoCancelStage(EchoCancelStage):
    """`EchoCancelStage` for `LocalTransport`: each `MicFrame`'s played audio goes to the
    canceller's far end right before the frame is cancelled (see the module docstring)."""

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, MicFrame):
            if frame.gap:
                self.canceller.resync()
            self.canceller.far_end(frame.played, frame.played_rate)
            frame = InputAudioFrame(
                pcm=frame.pcm,
                sample_rate=frame.sample_rate,
                id=frame.id,
                created_ns=frame.created_ns,
            )
        await super().process(frame, direction)


class SpeakerSink:
    """The speaker as an `AudioSink`: `write` on the loop, `pull` on PortAudio's thread."""

    realtime = False

    def __init__(
        self,
        sample_rate: int,
        device_rate: int,
        buffer_ms: int = OUTPUT_BUFFER_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sample_rate = sample_rate
        self.device_rate = device_rate
        self.capacity = device_rate * buffer_ms // 1000
        self.latency_s = 0.0
        """PortAudio's output latency: from the callback to the speaker (set on open)."""
        self._clock = clock
        self._lock = threading.Lock()
        self._chunks: deque[PCM] = deque()
        self._offset = 0
        self._level = 0
        self._until = 0.0
        """When the last sample handed to PortAudio will have been played (on `clock`)."""
        self._room = asyncio.Event()
        self._closed = False
        self._resampler = (
            None
            if device_rate == sample_rate
            else soxr.ResampleStream(sample_rate, device_rate, 1, dtype="int16", quality="LQ")
        )

    async def write(self, pcm: PCM) -> None:
        if self._resampler is not None:
            pcm = self._resampler.resample_chunk(pcm)
        while not self._closed and self._level > 0 and self._level + len(pcm) > self.capacity:
            self._room.clear()
            await self._room.wait()
        if self._closed or len(pcm) == 0:
            return
        with self._lock:
            self._chunks.append(pcm)
            self._level += len(pcm)

    def buffered_ms(self) -> float:
        with self._lock:
            level, until = self._level, self._until
        return 1000.0 * (level / self.device_rate + max(0.0, until - self._clock()))

    def clear(self) -> None:
        """Drop what waits to be played (what PortAudio already has still plays)."""
        with self._lock:
            self._chunks.clear()
            self._offset = self._level = 0
        if self._resampler is not None:
            self._resampler.clear()
        self._room.set()

    def close(self) -> None:
        """Stop taking audio: a writer waiting for room returns at once, and so do later writes."""
        self._closed = True
        self.clear()

    def pull(self, n: int) -> PCM:
        """The next `n` samples for the device (silence where there are none): PortAudio's
        thread. The loop is told there is room by the transport."""
        out = np.zeros(n, np.int16)
        got = 0
        with self._lock:
            while got < n and self._chunks:
                head = self._chunks[0]
                take = min(n - got, len(head) - self._offset)
                out[got : got + take] = head[self._offset : self._offset + take]
                got += take
                self._offset += take
                if self._offset == len(head):
                    self._chunks.popleft()
                    self._offset = 0
            if got:
                self._level -= got
                self._until = self._clock() + self.latency_s + got / self.device_rate
        return out

    def wake(self) -> None:
        """There may be room now (on the loop)."""
        self._room.set()


@dataclass(slots=True)
class _Block:
    mic: PCM
    played: PCM
    gap: bool


class LocalTransport(Transport):
    """The local microphone and speaker through one full-duplex PortAudio stream.

    `sd` is the sounddevice module (a fake in tests); `devices` defaults to `find_devices`.
    The stream opens with `open()` (on the event loop) or at the first `frames()`, and
    `close()` (or `shutdown()`, from anywhere) stops and closes it. Counters: `dropped`
    (microphone blocks dropped because the loop fell behind), `overflows` (PortAudio lost
    input), `underflows` (the device ran dry), `callback_errors`.
    """

    sink: SpeakerSink

    def __init__(
        self,
        sample_rate: int = 16000,
        *,
        sd: Any = None,
        devices: Devices | None = None,
        output_buffer_ms: int = OUTPUT_BUFFER_MS,
        max_queued_ms: int = MAX_QUEUED_MS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sd = sd if sd is not None else import_sounddevice()
        self.devices = devices or find_devices(self._sd, sample_rate)
        self.sample_rate = sample_rate
        self.device_rate = rate = self.devices.sample_rate
        self.block = rate * FRAME_MS // 1000
        self.frame = sample_rate * FRAME_MS // 1000
        self.sink = SpeakerSink(sample_rate, rate, output_buffer_ms, clock)
        self._max_blocks = max(1, max_queued_ms // FRAME_MS)
        self._lock = threading.Lock()
        self._blocks: deque[_Block] = deque()
        self._wake_pending = False
        self._ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: Any = None
        self._closed = False
        self.lost = False
        """The stream stopped by itself (the device went away)."""
        self.dropped = self.overflows = self.underflows = self.callback_errors = 0
        self._resampler = (
            None
            if rate == sample_rate
            else soxr.ResampleStream(rate, sample_rate, 1, dtype="int16", quality="HQ")
        )
        self._mic = np.zeros(0, np.int16)
        self._played: list[PCM] = []
        self._gap = False

    def open(self) -> None:
        """Open and start the stream (on the event loop); a DeviceError if PortAudio refuses."""
        if self._stream is not None or self._closed:
            return
        self._loop = asyncio.get_running_loop()
        d = self.devices
        try:
            stream = self._sd.RawStream(
                samplerate=d.sample_rate,
                blocksize=self.block,
                device=(d.input, d.output),
                channels=1,
                dtype="int16",
                latency="low",
                callback=self._callback,
                finished_callback=self._finished,
            )
        except Exception as exc:
            raise DeviceError(
                f"cannot open {d.input_name!r} and {d.output_name!r} at {d.sample_rate} Hz: {exc}"
            ) from None
        self._stream = stream
        try:
            self.sink.latency_s = float(stream.latency[1])
            stream.start()
        except Exception as exc:
            self.shutdown()
            raise DeviceError(
                f"cannot start {d.input_name!r} and {d.output_name!r}: {exc}"
            ) from None

    # --- PortAudio's thread ------------------------------------------------------------------

    def _callback(self, indata: Any, outdata: Any, frames: int, when: Any, status: Any) -> None:
        try:
            played = self.sink.pull(frames)
            outdata[:] = played.tobytes()
            block = _Block(np.frombuffer(indata, np.int16).copy(), played, False)
            if status.input_overflow:
                self.overflows += 1
                block.gap = True
            if status.output_underflow:
                self.underflows += 1
            self._put(block)
        except Exception:  # nothing may reach PortAudio's thread: play silence, count it
            self.callback_errors += 1
            with contextlib.suppress(Exception):
                outdata[:] = bytes(len(outdata))

    def _put(self, block: _Block) -> None:
        with self._lock:
            if len(self._blocks) >= self._max_blocks:
                self._blocks.popleft()
                self.dropped += 1
                (self._blocks[0] if self._blocks else block).gap = True
            self._blocks.append(block)
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            self._call_soon(self._wake)

    def _finished(self) -> None:
        if not self._closed:
            self._call_soon(self._on_lost)

    def _call_soon(self, fn: Callable[[], None]) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
                self._loop.call_soon_threadsafe(fn)

    # --- the event loop ----------------------------------------------------------------------

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._ready.set()
        self.sink.wake()

    def _on_lost(self) -> None:
        if not self._closed:
            log.warning("the audio stream stopped by itself")
            self.lost = True
            self._ready.set()

    async def frames(self) -> AsyncIterator[Frame]:
        self.open()
        while not self._closed:
            with self._lock:
                blocks = list(self._blocks)
                self._blocks.clear()
            if not blocks:
                if self.lost:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            for block in blocks:
                for frame in self._frames_of(block):
                    yield frame

    def _frames_of(self, block: _Block) -> list[MicFrame]:
        mic = block.mic if self._resampler is None else self._resampler.resample_chunk(block.mic)
        self._mic = np.concatenate([self._mic, mic]) if len(self._mic) else mic
        self._played.append(block.played)
        self._gap |= block.gap
        out = []
        while len(self._mic) >= self.frame:
            pcm, self._mic = self._mic[: self.frame], self._mic[self.frame :]
            played = (
                self._played[0]
                if len(self._played) == 1
                else np.concatenate([np.zeros(0, np.int16), *self._played])
            )
            self._played = []
            out.append(
                MicFrame(
                    pcm=pcm,
                    sample_rate=self.sample_rate,
                    played=played,
                    played_rate=self.device_rate,
                    gap=self._gap,
                )
            )
            self._gap = False
        return out

    async def close(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Stop and close the stream and wake whoever waits; idempotent, needs no loop."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(RuntimeError):  # an Event whose loop has closed
            self._ready.set()
        with contextlib.suppress(RuntimeError):
            self.sink.close()
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
            except Exception as exc:
                log.warning("aborting the audio stream failed: %s", exc)
            finally:
                try:
                    stream.close()
                except Exception as exc:
                    log.warning("closing the audio stream failed: %s", exc)
