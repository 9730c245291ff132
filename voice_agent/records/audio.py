"""The stereo recording of a session: the caller on the left, the assistant on the right, both
placed on the session clock (`voice_agent.records.clock`) where they crossed the transport.

- The caller's audio is what the session received (its `InputAudioFrame`s, 16 kHz), placed
  where it arrived.
- The assistant's audio is what went out to the client: for a WebRTC track, each frame as the
  track hands it to the encoder (`ReplyTrack.on_sent`); for sinks that send what is written
  (`/pcm`, the Realtime API), each frame as it is written. Nothing that an interruption dropped
  is in it: the reply stops where the caller stopped hearing it.

Each channel is kept contiguous (network jitter or a stalled loop does not tear it apart, as a
player's buffer would not): a frame goes right after the one before unless the stream has come
later than that by more than `SLACK_MS` for `HOLD_MS` (the client stopped sending, packets were
lost, a new reply began); the frames held meanwhile then go after the gap, as early as they
can (a late burst ends where it arrived). A frame that comes *before* the end of the audio
ahead of it proves that audio placed late (it was anchored while the loop was stalled, so
every frame then came late): the stretch since the last gap moves that much earlier, into the
gap, so each stretch sits where its earliest frame says it began. What a client sent before
the session began (read in a burst as it began) would sit before the clock's zero: it is left
out.

`StereoRecording` keeps what is not yet written in one buffer, at most `MAX_PENDING_S` long;
the recorder writes what is older than `MARGIN_S` to the WAV file (`WavFile`, in a worker
thread), so memory stays bounded whatever the session's length.
"""

from __future__ import annotations

import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from voice_agent.audio.pcm import resample
from voice_agent.audio.playback import AudioSink
from voice_agent.events import Event
from voice_agent.frames import PCM, Frame, InputAudioFrame
from voice_agent.records.clock import RATE, SessionClock
from voice_agent.transports.base import Transport

CALLER, ASSISTANT = 0, 1
SLACK_MS = 20
"""A stream within this of where it should be stays contiguous."""
HOLD_MS = 100
"""A stream late by more than the slack for this long has a gap."""
EARLY = RATE // 1000
"""A frame this much before the end of the audio ahead of it moves that audio earlier (1 ms:
less is the jitter of any clock)."""
MARGIN_S = 1.0
"""Nothing is placed this long before now: older audio can be written to the file."""
MAX_PENDING_S = 30.0
"""The most audio held before it is written (a disk this slow loses what comes beyond)."""


class StereoRecording:
    """Both channels on the session clock, until they are taken to be written."""

    def __init__(self, rate: int = RATE) -> None:
        self.rate = rate
        self._slack = rate * SLACK_MS // 1000
        self._hold = rate * HOLD_MS // 1000
        self._max = round(rate * MAX_PENDING_S)
        self._buf = np.zeros((0, 2), np.int16)
        self.base = 0
        """The position of the first sample not yet taken."""
        self.end = [0, 0]
        """Where each channel's audio ends."""
        self._stretch = [(0, 0), (0, 0)]
        """Each channel's stretch since its last gap: where it begins, and the earliest it may
        begin (the end of the audio before the gap)."""
        self._held: tuple[list[tuple[int, PCM]], ...] = ([], [])
        """Each channel's frames that came late, with where they came."""
        self.dropped = 0
        """Samples lost (placed too far ahead of what was written)."""

    # --- placing --------------------------------------------------------------------------

    def caller(self, pcm: PCM, at: int) -> None:
        """A frame of the caller's audio that arrived at `at` (samples)."""
        self._place(CALLER, pcm, at)

    def assistant(self, pcm: PCM, at: int) -> None:
        """A frame of the assistant's audio that went out at `at` (samples)."""
        self._place(ASSISTANT, pcm, at)

    def _place(self, channel: int, pcm: PCM, at: int) -> None:
        """Contiguous with the channel's audio unless late by more than the slack for
        `HOLD_MS`: then the frames held meanwhile go after the gap, as early as they can."""
        held = self._held[channel]
        if held and at - held[0][0] >= self._hold:  # late all along: a gap before them
            self._release(channel, self._lateness(channel))
        contiguous = self.end[channel] + sum(len(p) for _, p in held)
        if at - contiguous <= self._slack:  # on time, or early: the stream goes on
            self._release(channel, 0)
            if self.end[channel] - at > EARLY:
                self._move_earlier(channel, self.end[channel] - at)
            self._put(channel, pcm, self.end[channel])
        else:
            held.append((at, pcm))

    def _move_earlier(self, channel: int, by: int) -> None:
        """Move the channel's stretch since its last gap `by` samples earlier: at most to the
        audio before the gap; a first stretch that would begin before the session did loses
        what came before it (sent before the session began, read in a burst as it began)."""
        start, floor = self._stretch[channel]
        if start < self.base or start >= self.end[channel]:
            return  # (partly written already, or cut away: it stays where it is)
        lowest = max(floor, self.base)
        head = max(0, by - (start - lowest)) if floor == 0 else 0
        by = min(by, start - lowest + head)
        if by <= 0:
            return
        lo, hi = start - self.base, self.end[channel] - self.base
        kept = self._buf[lo + head : hi, channel].copy()
        self._buf[lo - by + head : hi - by, channel] = kept
        self._buf[hi - by : hi, channel] = 0
        self._stretch[channel] = (start - by + head, floor)
        self.end[channel] -= by

    def _lateness(self, channel: int) -> int:
        """How late the held frames are, at the least (the gap before them)."""
        pos, least = self.end[channel], None
        for at, pcm in self._held[channel]:
            least = at - pos if least is None else min(least, at - pos)
            pos += len(pcm)
        return max(0, least or 0)

    def _release(self, channel: int, gap: int) -> None:
        if gap > 0 or self.end[channel] == 0:  # a new stretch begins
            self._stretch[channel] = (self.end[channel] + gap, self.end[channel])
        pos = self.end[channel] + gap
        for _, pcm in self._held[channel]:
            self._put(channel, pcm, pos)
            pos += len(pcm)
        self._held[channel].clear()

    def cut(self, at: int) -> None:
        """The assistant's audio from `at` on was never heard (an interruption dropped it)."""
        if self._held[ASSISTANT]:
            self._release(ASSISTANT, self._lateness(ASSISTANT))
        if at < self.end[ASSISTANT]:
            lo = max(at, self.base) - self.base
            self._buf[lo : self.end[ASSISTANT] - self.base, ASSISTANT] = 0
            self.end[ASSISTANT] = max(at, self.base)

    def _put(self, channel: int, pcm: PCM, pos: int) -> None:
        if pos < self.base:  # (a frame later than the margin: what is written stays)
            pcm, pos = pcm[self.base - pos :], self.base
        need = pos + len(pcm) - self.base
        if need > self._max:
            self.dropped += len(pcm)
            return
        if need > len(self._buf):
            grown = np.zeros((max(need, 2 * len(self._buf)), 2), np.int16)
            grown[: len(self._buf)] = self._buf
            self._buf = grown
        self._buf[pos - self.base : need, channel] = pcm
        self.end[channel] = max(self.end[channel], pos + len(pcm))

    # --- taking ---------------------------------------------------------------------------

    def take(self, upto: int) -> np.ndarray:
        """Interleaved stereo from `base` up to `upto` (silence where neither channel has
        audio); it is forgotten here."""
        n = max(0, upto - self.base)
        out = np.zeros((n, 2), np.int16)
        have = min(n, len(self._buf))
        out[:have] = self._buf[:have]
        self._buf = self._buf[have:].copy() if have < len(self._buf) else self._buf[:0]
        self.base += n
        return out

    def finish(self) -> np.ndarray:
        """Everything not yet taken (frames held placed as late as they came)."""
        for channel in (CALLER, ASSISTANT):
            self._release(channel, self._lateness(channel))
        return self.take(max(self.end))


class WavFile:
    """A stereo 16-bit WAV file written piece by piece; its header is right after every
    piece, so a crash keeps what was written. Blocking: call it from a worker thread."""

    def __init__(self, path: Path, rate: int = RATE) -> None:
        self.path = path
        self._wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed by `close`
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)

    def write(self, stereo: np.ndarray) -> None:
        if len(stereo):
            self._wav.writeframes(stereo.astype("<i2").tobytes())

    def close(self) -> None:
        self._wav.close()


class RecordingSink:
    """The transport's sink, recording what goes out to the caller (see the module docstring)."""

    def __init__(self, sink: AudioSink, recording: StereoRecording, clock: SessionClock) -> None:
        self.inner = sink
        self.sample_rate = sink.sample_rate
        self.realtime = sink.realtime
        self._recording = recording
        self._clock = clock
        self._tapped = hasattr(sink, "on_sent")
        if self._tapped:
            sink.on_sent = self._sent  # type: ignore[attr-defined]

    def _sent(self, pcm: PCM) -> None:
        """A frame leaves now."""
        self._recording.assistant(resample(pcm, self.sample_rate, RATE), self._clock.samples())

    async def write(self, pcm: PCM) -> None:
        if not self._tapped:  # it goes out once what the sink holds has
            ahead = round(self.inner.buffered_ms() * RATE / 1000)
            out = resample(pcm, self.sample_rate, RATE)
            self._recording.assistant(out, self._clock.samples() + ahead)
        await self.inner.write(pcm)

    def buffered_ms(self) -> float:
        return self.inner.buffered_ms()

    def clear(self) -> None:
        if not self._tapped:
            self._recording.cut(self._clock.samples())
        self.inner.clear()


class RecordedTransport(Transport):
    """A transport whose audio, both ways, is also recorded; everything else is its own."""

    def __init__(
        self, transport: Transport, recording: StereoRecording, clock: SessionClock
    ) -> None:
        self.inner = transport
        self.sink = RecordingSink(transport.sink, recording, clock)
        self._recording = recording
        self._clock = clock

    async def frames(self) -> AsyncIterator[Frame]:
        async for frame in self.inner.frames():
            if isinstance(frame, InputAudioFrame):
                pcm = resample(frame.pcm, frame.sample_rate, RATE)
                self._recording.caller(pcm, self._clock.samples())
            yield frame

    async def send_event(self, event: Event) -> None:
        await self.inner.send_event(event)

    async def close(self) -> None:
        await self.inner.close()
