"""PCM helpers. Resampling goes through soxr (a kept library), never by hand."""

from __future__ import annotations

from collections import deque

import numpy as np
import soxr

from voice_agent.frames import PCM


def to_int16(samples: np.ndarray) -> PCM:
    """Float samples in [-1, 1] (or int16 already) -> int16, clipped."""
    if samples.dtype == np.int16:
        return samples.astype(np.int16, copy=False)
    clipped: np.ndarray = np.clip(samples, -1.0, 1.0) * 32767.0
    return clipped.astype(np.int16)


def resample(pcm: PCM, src_rate: int, dst_rate: int) -> PCM:
    """Resample mono int16 audio (whole clips; streams keep a `soxr.ResampleStream`)."""
    if src_rate == dst_rate or len(pcm) == 0:
        return pcm
    return soxr.resample(pcm, src_rate, dst_rate)  # type: ignore[no-any-return]


AUDIBLE = 100
"""A sample above this (-50 dBFS) is sound rather than silence."""


def audible(pcm: PCM, level: int = AUDIBLE) -> tuple[int, int]:
    """The first sample above `level` and one past the last ((0, 0) if none): where the sound
    in a clip begins and ends."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > level)
    return (int(loud[0]), int(loud[-1]) + 1) if len(loud) else (0, 0)


def dbfs(pcm: PCM) -> float:
    """RMS level in dB relative to full scale (-inf for digital silence)."""
    if len(pcm) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64)))))
    return 20 * np.log10(rms / 32768.0) if rms > 0 else float("-inf")


class Preroll:
    """The last `samples` of a stream, in the chunks it came in (at most one chunk more): the
    audio from before the VAD confirmed speech, which began a little earlier."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self._chunks: deque[PCM] = deque()
        self._len = 0

    def keep(self, pcm: PCM) -> None:
        if not self.samples:
            return
        self._chunks.append(pcm)
        self._len += len(pcm)
        while self._chunks and self._len - len(self._chunks[0]) >= self.samples:
            self._len -= len(self._chunks.popleft())

    def take(self) -> list[PCM]:
        """What is kept, oldest first; it is then forgotten."""
        chunks = list(self._chunks)
        self._chunks.clear()
        self._len = 0
        return chunks


class WholeFrames:
    """Cuts audio of any length into whole frames of `frame` samples (10 ms for WebRTC's audio
    processing): `take` returns the whole frames ready, with what was left over from the last
    call in front, and keeps the rest (under a frame) for the next call."""

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self._rest = np.zeros(0, np.int16)

    def take(self, pcm: PCM) -> PCM:
        joined = np.concatenate([self._rest, pcm]) if len(self._rest) else pcm
        whole = len(joined) - len(joined) % self.frame
        self._rest = joined[whole:].copy()
        return np.ascontiguousarray(joined[:whole], dtype=np.int16)

    def clear(self) -> None:
        self._rest = np.zeros(0, np.int16)
