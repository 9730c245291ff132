"""The speaker of the local transport: an `AudioSink` the event loop writes to and PortAudio's
thread pulls from.

The sink is not `realtime`: the device's clock paces the reply (paced by the loop's clock, it
would drift from the device's: gaps, or a growing delay). `write` waits while the sink would
hold more than `OUTPUT_BUFFER_MS` (60 ms: the callback takes 20 ms at a time, and the loop has
40 ms to top it up), so an interruption has little to drop (`clear`). `buffered_ms` counts what
the sink holds plus what PortAudio has been given and not yet played (its output latency), so
`played_ms` is what really left the speaker (give or take the ~10 ms a resampler holds, when
the speaker does not take 16 kHz).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import soxr

from voice_agent.frames import PCM

OUTPUT_BUFFER_MS = 60
"""Audio the sink holds before `write` waits (see the module docstring)."""


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
