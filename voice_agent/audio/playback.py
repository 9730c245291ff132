"""Playback: the one place that paces output audio and knows what has been heard.

`PlaybackStage` takes `TTSAudioFrame`s, cuts them into fixed frames (20 ms by default) and
writes them to the transport's `AudioSink` at real time, counted in samples. It knows
`played_ms` at every moment (written minus what the sink still buffers), so on an interruption
it stops within one frame and reports upstream exactly which words were heard.

Two more things the turn logic asks of it:
- *hold*: a reply answers the `UserTurnFrame` before it; its audio waits until that turn's
  `EndOfTurnFrame` (a preemptive reply is ready before the turn is known to be over).
- *duck*: a `DuckOutputFrame` lowers the voice from the next frame on (ramped over 5 ms, so it
  does not click) while the turn logic decides whether the user is barging in.
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
from voice_agent.events import (
    BotStartedSpeaking,
    BotStoppedSpeaking,
    PlaybackInterrupted,
    ReplyAudioReady,
    ReplyHeld,
    ReplyReleased,
    ReplyText,
)
from voice_agent.frames import (
    PCM,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Direction,
    DuckOutputFrame,
    EndFrame,
    EndOfTurnFrame,
    Frame,
    PlaybackInterruptedFrame,
    TTSAudioFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserTurnFrame,
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

    def clear(self) -> None:
        """Drop what is buffered and not yet played (the reply was interrupted)."""


Sleep = Callable[[float], Awaitable[None]]

GAIN_RAMP_MS = 5
"""A change of level (ducking) ramps over this long instead of jumping, which would click."""


@dataclass(slots=True)
class _Chunk:
    pcm: PCM
    text: str
    turn: int = 0
    """The user turn this answers: it waits until that turn has ended."""
    played: int = 0


_END_OF_REPLY = _Chunk(np.zeros(0, np.int16), "")


def words_heard(words: int, played: int, total: int) -> int:
    """How many of a chunk's `words` have been heard once `played` of its `total` samples
    have: those whose (proportional) end was played."""
    return words if total <= 0 or played >= total else words * max(0, played) // total


def heard_text(chunks: list[tuple[str, int, int]]) -> str:
    """Words heard, from (text, samples played, samples total) of each chunk in order."""
    words: list[str] = []
    for text, played, total in chunks:
        parts = text.split()
        words += parts[: words_heard(len(parts), played, total)]
    return " ".join(words)


class PlaybackStage(Stage):
    """Writes the reply to the sink in frames (paced in real time where the sink does not keep
    time itself); stops within one frame when interrupted."""

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
        self._reply_turn = 0
        """The turn the next reply answers (from the last UserTurnFrame)."""
        self._ended_turn = 0
        self._turn_ended = asyncio.Event()
        self._gain = 1.0
        self._target_gain = 1.0
        self._first_audio_due = False

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
            if self._first_audio_due:
                self._first_audio_due = False
                held = self._reply_turn > self._ended_turn
                self.emit(ReplyAudioReady(turn=self._reply_turn, held=held))
            self._enqueue_chunk(_Chunk(pcm, frame.text, self._reply_turn))
        elif isinstance(frame, TTSStartedFrame):
            self._first_audio_due = True
            await self.push(frame, direction)
        elif isinstance(frame, UserTurnFrame):
            self._reply_turn = frame.turn
            await self.push(frame, direction)
        elif isinstance(frame, EndOfTurnFrame):
            if frame.turn > self._ended_turn:
                self._ended_turn = frame.turn
                self._turn_ended.set()
            await self.push(frame, direction)
        elif isinstance(frame, DuckOutputFrame):
            if self.speaking:  # a duck is for the reply playing, never for the next one
                self._target_gain = 10.0 ** (-frame.db / 20.0)
            await self.push(frame, direction)
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
        self.sink.clear()  # what it still buffers was never heard, and must not be
        was_speaking = self.speaking
        self._pending.clear()
        self._reset_reply()
        self._player = self.create_task(self._play(), "player")
        self.emit(PlaybackInterrupted(played_ms=played_ms, heard=heard))
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

    async def _end_reply(self) -> None:
        if self.speaking:
            self.emit(BotStoppedSpeaking(played_ms=round(self.played_ms)))
            await self.push(BotStoppedSpeakingFrame(), UP)
        self._reset_reply()

    def _reset_reply(self) -> None:
        self._done.clear()
        self._written = 0
        self.speaking = False
        self._gain = self._target_gain = 1.0
        self._idle.set()

    async def _wait_for_turn(self, turn: int) -> None:
        """Hold a reply until the user's turn it answers is over."""
        if turn > self._ended_turn:
            self.emit(ReplyHeld(turn=turn))
            while turn > self._ended_turn:
                self._turn_ended.clear()
                await self._turn_ended.wait()
            self.emit(ReplyReleased(turn=turn))

    def _words_heard(self, words: list[str], chunk: _Chunk, just_played: int) -> None:
        """Report the words whose end the last `just_played` samples of `chunk` played (the
        `reply_text` event: captions in step with the voice)."""
        total = len(chunk.pcm)
        before = words_heard(len(words), chunk.played - just_played, total) if just_played else 0
        now = words_heard(len(words), chunk.played, total) if just_played or not total else 0
        if now > before:
            self.emit(ReplyText(text="".join(w + " " for w in words[before:now])))

    def _apply_gain(self, frame: PCM) -> PCM:
        if self._gain == 1.0 and self._target_gain == 1.0:
            return frame
        gain = np.full(len(frame), self._target_gain, np.float32)
        if self._gain != self._target_gain:  # a 5 ms ramp: quick, and no click
            n = min(len(frame), self.sink.sample_rate * GAIN_RAMP_MS // 1000)
            gain[:n] = np.linspace(self._gain, self._target_gain, n, dtype=np.float32)
            self._gain = self._target_gain
        return (frame.astype(np.float32) * gain).astype(np.int16)

    async def _play(self) -> None:
        deadline = 0.0
        while True:
            while not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            chunk = self._pending.popleft()
            if chunk is _END_OF_REPLY:
                await self._end_reply()
                continue
            if chunk.turn > self._ended_turn:  # a new reply, for a turn not over yet
                if self.speaking:  # the last reply never got its end (it failed): close it
                    await self._end_reply()
                await self._wait_for_turn(chunk.turn)
            self._done.append(chunk)
            if not self.speaking:
                self.speaking = True
                self._gain = self._target_gain = 1.0  # a reply starts at full level
                deadline = self._clock()
                self.emit(BotStartedSpeaking())
                await self.push(BotStartedSpeakingFrame(), UP)
            words = chunk.text.split()
            self._words_heard(words, chunk, 0)  # (a chunk of no audio: its words at once)
            while chunk.played < len(chunk.pcm):
                frame = chunk.pcm[chunk.played : chunk.played + self.frame_samples]
                if len(frame) < self.frame_samples:
                    frame = np.pad(frame, (0, self.frame_samples - len(frame)))
                await self.sink.write(self._apply_gain(frame))
                n = min(self.frame_samples, len(chunk.pcm) - chunk.played)
                chunk.played += n
                self._written += n
                self._words_heard(words, chunk, n)
                if self.sink.realtime:
                    deadline += n / self.sink.sample_rate
                    delay = deadline - self._clock()
                    if delay > 0:
                        await self._sleep(delay)
                    elif delay < -0.2:
                        deadline = self._clock()  # fell behind (a stall): don't burst to catch up
