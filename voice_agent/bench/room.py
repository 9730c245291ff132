"""A simulated room: a scripted person at a microphone, a speaker, and the echo between them.

`Room` is a `Transport` for benchmarks and tests of turn-taking. Its microphone delivers 20 ms
frames in real time, forever (silence when the script has nothing to say), until `hang_up()`;
what the script queues with `say()` is mixed in. Its speaker takes the assistant's frames as a
real device would: one frame leaves the speaker for each microphone tick, and, with `echo_db`
set, comes back into the microphone `echo_delay_ms` later, that much quieter (a laptop with its
speakers on). `far_end`, if given, is told of every frame as it leaves the speaker: that is
where an echo canceller takes its reference.

Everything is recorded on the microphone's clock (samples since the start): when each scripted
utterance began and ended, and when each output frame was played, so that latencies can be
measured on the audio itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from voice_agent.audio.pcm import dbfs
from voice_agent.events import Event
from voice_agent.frames import PCM, Frame, InputAudioFrame
from voice_agent.transports.base import Transport

E = TypeVar("E", bound=Event)

FRAME_MS = 20
MAX_SPEAKER_FRAMES = 50
"""Frames the speaker holds before `write` waits (1 s): a real device's buffer is bounded too."""


@dataclass(slots=True)
class Utterance:
    """What the script said, and where it sits on the microphone's clock."""

    label: str
    start: int
    end: int


@dataclass(slots=True)
class Played:
    """One frame that left the speaker, at microphone sample `at`."""

    at: int
    pcm: PCM


@dataclass(slots=True)
class Line:
    """Speech the script has queued; `utterance` is set once it has been said."""

    label: str
    pcm: PCM
    pos: int = 0
    start: int = 0
    utterance: Utterance | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Speaker:
    """The room's loudspeaker: an `AudioSink` that plays one frame per microphone tick."""

    realtime = True

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.frame = sample_rate * FRAME_MS // 1000
        self._queue: deque[PCM] = deque()
        self._room_to_write = asyncio.Event()
        self._room_to_write.set()
        self.off = False
        """Switched off (the room has hung up): what is written goes nowhere, at once."""

    async def write(self, pcm: PCM) -> None:
        if self.off:
            return
        while len(self._queue) >= MAX_SPEAKER_FRAMES and not self.off:
            self._room_to_write.clear()
            await self._room_to_write.wait()
        self._queue.append(pcm)

    def buffered_ms(self) -> float:
        return FRAME_MS * len(self._queue)

    def clear(self) -> None:
        self._queue.clear()
        self._room_to_write.set()

    def tick(self) -> PCM:
        """The frame playing during this microphone tick (silence if none)."""
        self._room_to_write.set()
        if not self._queue:
            return np.zeros(self.frame, np.int16)
        pcm = self._queue.popleft()
        if len(pcm) != self.frame:
            pcm = np.resize(pcm, self.frame) if len(pcm) else np.zeros(self.frame, np.int16)
        return pcm


class Room(Transport):
    """A scripted microphone and a speaker with optional echo (see the module docstring)."""

    def __init__(
        self,
        sample_rate: int = 16000,
        *,
        echo_db: float | None = None,
        echo_delay_ms: int = 40,
        far_end: Callable[[PCM, int], None] | None = None,
    ) -> None:
        self.rate = sample_rate
        self.frame = sample_rate * FRAME_MS // 1000
        self.speaker = Speaker(sample_rate)
        self.sink = self.speaker
        self.echo_gain = None if echo_db is None else 10 ** (-abs(echo_db) / 20)
        self._echo: deque[PCM] = deque(
            [np.zeros(self.frame, np.int16)] * max(1, echo_delay_ms // FRAME_MS)
        )
        self.far_end = far_end
        self.mic = 0
        """Samples the microphone has delivered."""
        self.utterances: list[Utterance] = []
        self.played: list[Played] = []
        self.events: list[tuple[int, Event]] = []
        """Session events, each with the microphone sample at which it happened."""
        self._lines: deque[Line] = deque()
        self._ended = False
        self._tick = asyncio.Event()

    # --- the script --------------------------------------------------------------------------

    def say(self, pcm: PCM, label: str = "") -> Line:
        """Queue speech (16 kHz int16); it starts when what was queued before has been said."""
        line = Line(label, pcm)
        self._lines.append(line)
        return line

    async def said(self, line: Line) -> Utterance:
        """Until `line` has been said; where it sat on the microphone's clock."""
        await line.done.wait()
        assert line.utterance is not None
        return line.utterance

    async def wait_ms(self, ms: float) -> None:
        """Until the microphone's clock has moved on by `ms`."""
        target = self.mic + self.rate * ms / 1000
        while self.mic < target:
            self._tick.clear()
            await self._tick.wait()

    def hang_up(self) -> None:
        self._ended = True
        self.speaker.off = True
        self.speaker.tick()  # wake a writer waiting for room

    # --- Transport ---------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[Frame]:
        next_at = time.monotonic()
        while not self._ended:
            pcm = self._next_mic_frame()
            yield InputAudioFrame(pcm=pcm, sample_rate=self.rate)
            self.mic += self.frame
            self._tick.set()
            next_at += FRAME_MS / 1000
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                next_at = time.monotonic()  # the loop stalled: carry on from now

    def _next_mic_frame(self) -> PCM:
        mic = np.zeros(self.frame, np.float32)
        n = 0
        while self._lines and n < self.frame:
            line = self._lines[0]
            if line.pos == 0:
                line.start = self.mic + n
            take = min(self.frame - n, len(line.pcm) - line.pos)
            mic[n : n + take] += line.pcm[line.pos : line.pos + take]
            line.pos += take
            n += take
            if line.pos >= len(line.pcm):
                self._lines.popleft()
                line.utterance = Utterance(line.label, line.start, self.mic + n)
                self.utterances.append(line.utterance)
                line.done.set()
        out = self.speaker.tick()
        if np.any(out):
            self.played.append(Played(self.mic, out))
        if self.far_end is not None:
            self.far_end(out, self.rate)
        if self.echo_gain is not None:
            self._echo.append(out)
            mic += self._echo.popleft().astype(np.float32) * self.echo_gain
        return np.clip(mic, -32768, 32767).astype(np.int16)

    async def send_event(self, event: Event) -> None:
        # events reach a transport a little after they happen: place them by their timestamp
        late = max(0, time.monotonic_ns() - event.t_ns)
        self.events.append((max(0, self.mic - late * self.rate // 1_000_000_000), event))

    async def close(self) -> None:
        self.hang_up()

    # --- reading the record ------------------------------------------------------------------

    def first_event(self, kind: type[E], after: int = 0) -> tuple[int, E] | None:
        """The first session event of `kind` at or after microphone sample `after`."""
        return next(((at, e) for at, e in self.events if isinstance(e, kind) and at >= after), None)

    def kinds(self) -> list[str]:
        return [e.type for _, e in self.events]

    def level_db(self, start: int, end: int) -> float:
        """Level of what the speaker played between two microphone samples (dBFS)."""
        frames = [p.pcm for p in self.played if start <= p.at < end]
        return dbfs(np.concatenate(frames)) if frames else -120.0
