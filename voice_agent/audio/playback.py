"""Playback: the one place that paces output audio and knows what has been heard.

`PlaybackStage` takes `TTSAudioFrame`s, cuts them into fixed frames (20 ms by default) and
writes them to the transport's `AudioSink` at real time, counted in samples. It knows
`played_ms` at every moment (written minus what the sink still buffers), so on an interruption
it stops within one frame and reports upstream exactly which words were heard.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voice_agent.audio.pcm import resample
from voice_agent.frames import (
    PCM,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Direction,
    EndFrame,
    Frame,
    PlaybackInterruptedFrame,
    TTSAudioFrame,
    TTSStoppedFrame,
)
from voice_agent.pipeline import UP, Stage
from voice_agent.tasks import cancel_and_wait


class AudioSink(Protocol):
    """Where a transport takes the assistant's audio."""

    sample_rate: int
    realtime: bool
    """True when the sink plays what it gets as it gets it (a speaker, a WebRTC track): writes
    are then paced in real time. False for sinks that take audio as fast as it comes (a file)."""

    async def write(self, pcm: PCM) -> None:
        """Take one frame of audio (may wait if the transport applies back-pressure)."""

    def buffered_ms(self) -> float:
        """Audio written but not yet played out by the transport."""


Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class _Chunk:
    pcm: PCM
    text: str
    played: int = 0


_END_OF_REPLY = _Chunk(np.zeros(0, np.int16), "")


def heard_text(chunks: list[tuple[str, int, int]]) -> str:
    """Words heard, from (text, samples played, samples total) of each chunk in order.

    A partly played chunk counts the share of its words whose (proportional) end was played.
    """
    words: list[str] = []
    for text, played, total in chunks:
        parts = text.split()
        if total <= 0 or played >= total:
            words += parts
        elif played > 0:
            words += parts[: int(len(parts) * played / total)]
    return " ".join(words)


class PlaybackStage(Stage):
    """Paces the reply out to the sink; stops within one frame when interrupted."""

    def __init__(
        self,
        sink: AudioSink,
        frame_ms: int = 20,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__("playback")
        self.sink = sink
        self.frame_samples = sink.sample_rate * frame_ms // 1000
        self._clock = clock
        self._sleep = sleep
        self._pending: deque[_Chunk] = deque()
        self._done: list[_Chunk] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._player: asyncio.Task[None] | None = None
        self._written = 0
        self.speaking = False

    @property
    def played_ms(self) -> float:
        """Milliseconds of the current reply that have been played out."""
        written_ms = 1000.0 * self._written / self.sink.sample_rate
        return max(0.0, written_ms - self.sink.buffered_ms())

    async def setup(self) -> None:
        self._player = self.create_task(self._play(), "player")

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, TTSAudioFrame):
            pcm = resample(frame.pcm, frame.sample_rate, self.sink.sample_rate)
            self._enqueue_chunk(_Chunk(pcm, frame.text))
        elif isinstance(frame, TTSStoppedFrame):
            self._enqueue_chunk(_END_OF_REPLY)
            await self.push(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._idle.wait()
            await self.push(frame, direction)
        else:
            await self.push(frame, direction)

    def _enqueue_chunk(self, chunk: _Chunk) -> None:
        self._pending.append(chunk)
        self._idle.clear()
        self._wake.set()

    async def on_interruption(self) -> None:
        await cancel_and_wait(self._player)
        heard = heard_text([(c.text, p, len(c.pcm)) for c, p in self._played_samples()])
        played_ms = round(self.played_ms)
        was_speaking = self.speaking
        self._pending.clear()
        self._reset_reply()
        self._player = self.create_task(self._play(), "player")
        self.emit("playback_interrupted", played_ms=played_ms, heard=heard)
        await self.push(PlaybackInterruptedFrame(played_ms=played_ms, heard_text=heard), UP)
        if was_speaking:
            await self.push(BotStoppedSpeakingFrame(), UP)

    def _played_samples(self) -> list[tuple[_Chunk, int]]:
        """Each chunk of the reply with how many of its samples were really played out."""
        unplayed = int(self.sink.buffered_ms() * self.sink.sample_rate / 1000)
        out = []
        for c in reversed([*self._done, *self._pending]):
            take = min(unplayed, c.played)
            unplayed -= take
            out.append((c, c.played - take))
        out.reverse()
        return out

    def _reset_reply(self) -> None:
        self._done.clear()
        self._written = 0
        self.speaking = False
        self._idle.set()

    async def _play(self) -> None:
        deadline = 0.0
        while True:
            while not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            chunk = self._pending.popleft()
            if chunk is _END_OF_REPLY:
                if self.speaking:
                    self.emit("bot_stopped_speaking", played_ms=round(self.played_ms))
                    await self.push(BotStoppedSpeakingFrame(), UP)
                self._reset_reply()
                continue
            self._done.append(chunk)
            if not self.speaking:
                self.speaking = True
                deadline = self._clock()
                self.emit("bot_started_speaking")
                await self.push(BotStartedSpeakingFrame(), UP)
            while chunk.played < len(chunk.pcm):
                frame = chunk.pcm[chunk.played : chunk.played + self.frame_samples]
                if len(frame) < self.frame_samples:
                    frame = np.pad(frame, (0, self.frame_samples - len(frame)))
                await self.sink.write(frame)
                n = min(self.frame_samples, len(chunk.pcm) - chunk.played)
                chunk.played += n
                self._written += n
                if self.sink.realtime:
                    deadline += n / self.sink.sample_rate
                    delay = deadline - self._clock()
                    if delay > 0:
                        await self._sleep(delay)
                    elif delay < -0.2:
                        deadline = self._clock()  # fell behind (a stall): don't burst to catch up
