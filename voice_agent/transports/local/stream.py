"""`LocalTransport`: the local microphone and speaker through one full-duplex PortAudio stream.

The stream runs at the pipeline's rate (16 kHz mono int16), or at the speaker's default rate
when the devices refuse that, resampled both ways (soxr, streaming). Its callback runs on
PortAudio's thread every 20 ms, and never blocks or waits for the event loop:

- it pulls the next 20 ms from the `SpeakerSink` (silence when that is empty) and hands it to
  the device;
- it puts the microphone's block, together with the block it has just played, in a bounded
  queue (the oldest dropped and counted when the loop falls 1 s behind) and wakes the loop with
  `call_soon_threadsafe`, at most one wake-up pending at a time.

`frames()` turns the blocks into 20 ms `MicFrame`s (see `echo`).
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

from voice_agent.frames import PCM, Frame
from voice_agent.transports.base import Transport
from voice_agent.transports.local.devices import (
    DeviceError,
    Devices,
    find_devices,
    import_sounddevice,
)
from voice_agent.transports.local.echo import MicFrame
from voice_agent.transports.local.speaker import OUTPUT_BUFFER_MS, SpeakerSink

log = logging.getLogger(__name__)

FRAME_MS = 20
MAX_QUEUED_MS = 1000
"""Microphone audio waiting for the event loop; past that the oldest is dropped."""


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
