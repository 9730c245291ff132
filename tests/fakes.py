"""Fake engines and a fake transport for fast, hermetic timeline tests.

The fakes are deterministic: FakeTTS speaks 100 ms per word, so "which words were heard" follows
from how many 20 ms frames were played.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import numpy as np

from voice_agent.backbone.base import GenerationParams
from voice_agent.config import Settings
from voice_agent.engines import Engines
from voice_agent.events import Event, event_type
from voice_agent.executor import EngineExecutor
from voice_agent.frames import (
    PCM,
    Direction,
    Frame,
    InputAudioFrame,
    InterruptionRequestFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voice_agent.persona import Persona, Voice

RATE = 16000
MS_PER_WORD = 100
TRAILING_SILENCE_S = 0.6
"""Silence after each utterance: more than the default end-of-turn silence (500 ms)."""


class FakeASR:
    """Hands out scripted transcripts, one per utterance; records each utterance's length."""

    sample_rate = RATE

    def __init__(self, transcripts: Sequence[str]) -> None:
        self.transcripts = list(transcripts)
        self.utterances: list[int] = []

    def stream(self) -> FakeASRStream:
        return FakeASRStream(self)


class FakeASRStream:
    def __init__(self, engine: FakeASR) -> None:
        self.engine = engine
        self.samples = 0

    def accept(self, pcm: PCM) -> None:
        self.samples += len(pcm)

    def partial(self) -> str:
        return f"heard {self.samples * 1000 // RATE} ms"

    def finalize(self) -> str:
        self.engine.utterances.append(self.samples)
        return self.engine.transcripts.pop(0) if self.engine.transcripts else ""


class FakeLLM:
    """Streams scripted replies word by word; with `gate` set, each word after the first waits
    for the gate to open."""

    def __init__(self, replies: Sequence[str | Exception], *, repeat_last: bool = False) -> None:
        self.replies = list(replies)
        self.repeat_last = repeat_last
        """Answer with the last reply again once the script has run out."""
        self.prompts: list[list[dict[str, str]]] = []
        self.closed = 0
        self.gate: threading.Event | None = None

    def stream(self, messages: Sequence[dict[str, str]], params: GenerationParams) -> Iterator[str]:
        self.prompts.append([dict(m) for m in messages])
        reply = (
            self.replies[0] if self.repeat_last and len(self.replies) == 1 else self.replies.pop(0)
        )
        if isinstance(reply, Exception):
            raise reply
        return self._words(reply)

    def _words(self, reply: str) -> Iterator[str]:
        try:
            for i, word in enumerate(reply.split()):
                if self.gate is not None and i > 0:
                    self.gate.wait(5)
                yield word if i == 0 else " " + word
        finally:
            self.closed += 1


class FakeTTS:
    sample_rate = RATE

    def __init__(self) -> None:
        self.spoken: list[str] = []

    def synthesize(self, text: str, voice: Voice) -> PCM:
        self.spoken.append(text)
        n = RATE * MS_PER_WORD // 1000 * len(text.split())
        t = np.arange(n) / RATE
        return (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


class FakeSink:
    """Records frames. With `interrupt_after=N` it asks for an interruption right after frame N
    and then blocks any further write (as a real device would keep playing)."""

    realtime = False

    def __init__(self, sample_rate: int = RATE) -> None:
        self.sample_rate = sample_rate
        self.frames: list[PCM] = []
        self.interrupt_after: int | None = None
        self.on_interrupt: list[object] = []
        self.pipeline_queue: object = None
        self.cleared = 0

    async def write(self, pcm: PCM) -> None:
        if self.interrupt_after is not None and len(self.frames) >= self.interrupt_after:
            await asyncio.Event().wait()  # stays here until playback is cancelled
        self.frames.append(pcm.copy())
        if self.interrupt_after is not None and len(self.frames) == self.interrupt_after:
            assert callable(self.pipeline_queue)
            self.pipeline_queue(
                InterruptionRequestFrame(reason="test barge-in"), Direction.UPSTREAM
            )

    def buffered_ms(self) -> float:
        return 0.0

    def clear(self) -> None:
        self.cleared += 1

    @property
    def played_ms(self) -> float:
        return 1000.0 * sum(len(f) for f in self.frames) / self.sample_rate


class FakeTransport:
    """The test plays the user: `say()` queues speech; `hang_up()` ends the input."""

    def __init__(self) -> None:
        self.sink = FakeSink()
        self._inbox: asyncio.Queue[Frame | None] = asyncio.Queue()
        self.events: list[Event] = []
        self.closed = 0

    def say(self, seconds: float = 1.0, then_silence: float = TRAILING_SILENCE_S) -> None:
        """Speech start, `seconds` of audio, speech stop, then `then_silence` of silence (the
        turn logic counts silence in audio, so the end of turn needs it)."""
        self._inbox.put_nowait(UserStartedSpeakingFrame())
        self.silence(seconds)
        self._inbox.put_nowait(UserStoppedSpeakingFrame())
        self.silence(then_silence)

    async def say_paced(self, seconds: float, wall_s_per_frame: float = 0.005) -> None:
        """Like `say`, but the audio arrives over time (4x real time by default), as from a mic."""
        self._inbox.put_nowait(UserStartedSpeakingFrame())
        for _ in range(int(seconds * 50)):
            self.silence(0.02)
            await asyncio.sleep(wall_s_per_frame)
        self._inbox.put_nowait(UserStoppedSpeakingFrame())
        self.silence(TRAILING_SILENCE_S)

    def silence(self, seconds: float) -> None:
        """`seconds` of silent microphone audio."""
        for _ in range(round(seconds * 50)):
            self._inbox.put_nowait(
                InputAudioFrame(pcm=np.zeros(RATE // 50, np.int16), sample_rate=RATE)
            )

    def hang_up(self) -> None:
        self._inbox.put_nowait(None)

    async def frames(self) -> AsyncIterator[Frame]:
        while (frame := await self._inbox.get()) is not None:
            yield frame

    async def send_event(self, event: Event) -> None:
        self.events.append(event)

    async def close(self) -> None:
        self.closed += 1


def persona(max_sentences: int = 2, **turn_taking: object) -> Persona:
    """A plain persona; `turn_taking` fields as a persona file would set them."""
    return Persona.model_validate(
        {
            "id": "test",
            "name": "Test",
            "description": "test persona",
            "system_prompt": "Be brief.",
            "style": {"max_sentences": max_sentences},
            "turn_taking": turn_taking,
        }
    )


def engines(asr: FakeASR, llm: FakeLLM, tts: FakeTTS | None = None) -> Engines:
    return Engines(
        asr=asr, llm=llm, tts={"piper": tts or FakeTTS()}, executor=EngineExecutor(workers=2)
    )


def settings() -> Settings:
    return Settings()


def make_event(kind: str, t_ms: float = 0.0, **data: Any) -> Event:
    """The session event whose `type` is `kind`, with its fields, at `t_ms` (monotonic ms)."""
    return event_type(kind)(**data, t_ns=int(t_ms * 1_000_000))
