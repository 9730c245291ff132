"""A scripted microphone for the simulated callers: queued speech, silence in between, paced in
real time by a sample count; `MicTrack` sends it as a WebRTC track."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from dataclasses import dataclass, field

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voice_agent.audio.pcm import resample
from voice_agent.frames import PCM

FRAME_MS = 20


@dataclass(slots=True)
class Said:
    """One utterance of the script: when its first sample went out and when it was all out
    (monotonic s)."""

    label: str
    started: float = 0.0
    ended: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Mic:
    """A scripted microphone: queued speech, silence in between, one frame at a time."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.frame_samples = rate * FRAME_MS // 1000
        self._lines: deque[tuple[PCM, Said]] = deque()
        self._pos = 0

    def say(self, pcm: PCM, rate: int, label: str = "") -> Said:
        said = Said(label)
        self._lines.append((resample(pcm, rate, self.rate), said))
        return said

    def next_frame(self) -> PCM:
        """The next 20 ms, as it goes out now."""
        frame = np.zeros(self.frame_samples, np.int16)
        if self._lines:
            pcm, said = self._lines[0]
            if self._pos == 0:
                said.started = time.monotonic()
            part = pcm[self._pos : self._pos + self.frame_samples]
            frame[: len(part)] = part
            self._pos += len(part)
            if self._pos >= len(pcm):
                said.ended = time.monotonic() + len(part) / self.rate
                said.done.set()
                self._lines.popleft()
                self._pos = 0
        return frame


class Clock:
    """Paces frames in real time by a sample count (no drift, no burst after a stall)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._start: float | None = None
        self.samples = 0

    async def tick(self, samples: int) -> int:
        """Wait until the next frame is due; return its position (pts) in samples."""
        now = time.monotonic()
        if self._start is None:
            self._start = now
            return 0
        self.samples += samples
        delay = self._start + self.samples / self.rate - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.2:
            self._start = now - self.samples / self.rate
        return self.samples


class MicTrack(MediaStreamTrack):
    """A `Mic` as an outbound WebRTC audio track."""

    kind = "audio"

    def __init__(self, mic: Mic) -> None:
        super().__init__()
        self.mic = mic
        self._clock = Clock(mic.rate)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pts = await self._clock.tick(self.mic.frame_samples)
        frame = self.mic.next_frame()
        out = av.AudioFrame.from_ndarray(frame.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = self.mic.rate
        out.pts = pts
        out.time_base = fractions.Fraction(1, self.mic.rate)
        return out
