"""`TTSStage`: speaks the reply clause by clause, each audio frame tagged with the text it
carries."""

from __future__ import annotations

from collections.abc import Callable

from voice_agent.backbone.base import TTSEngine
from voice_agent.backbone.chunking import ClauseChunker
from voice_agent.backbone.stages.changes import PersonaChangeFrame
from voice_agent.events import (
    FirstClause,
    TtsChunk,
    TtsFirstChunk,
)
from voice_agent.executor import Priority, Runner
from voice_agent.frames import (
    Direction,
    Frame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    SpokenRepliesFrame,
    TTSAudioFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from voice_agent.persona import Persona
from voice_agent.pipeline import DOWN, Stage


class TTSStage(Stage):
    """Speaks the reply chunk by chunk, each audio frame tagged with the text it carries.

    With `speak` False the reply is text only: its chunks are reported (`tts_chunk` events),
    and nothing is synthesized. A `PersonaChangeFrame` changes the voice (and the engine), a
    `SpokenRepliesFrame` sets `speak`."""

    def __init__(
        self,
        engine: TTSEngine,
        executor: Runner,
        persona: Persona,
        first_clause_max_chars: int = 60,
        normalize: Callable[[str], str] = str.strip,
    ) -> None:
        super().__init__("tts")
        self.engine = engine
        self.executor = executor
        self.persona = persona
        self.normalize = normalize
        self.chunker = ClauseChunker(first_clause_max_chars)
        self._first_chunk = True
        self.speak = True

    async def on_interruption(self) -> None:
        self.chunker.reset()

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, LLMResponseStartFrame):
            self.chunker.reset()
            self._first_chunk = True
            await self.push(frame, direction)
            await self.push(TTSStartedFrame())
        elif isinstance(frame, LLMTextFrame):
            for chunk in self.chunker.feed(frame.text):
                await self._speak(chunk)
        elif isinstance(frame, LLMResponseEndFrame):
            rest = self.chunker.flush()
            if rest:
                await self._speak(rest)
            await self.push(frame, direction)
            await self.push(TTSStoppedFrame())
        elif isinstance(frame, PersonaChangeFrame):
            self.persona = frame.persona
            if frame.tts is not None:
                self.engine = frame.tts
            await self.push(frame, direction)
        elif isinstance(frame, SpokenRepliesFrame):
            self.speak = frame.spoken
            await self.push(frame, direction)
        else:
            await self.push(frame, direction)

    async def _speak(self, text: str) -> None:
        spoken = self.normalize(text)
        if not spoken:
            return
        if self._first_chunk:
            self.emit(FirstClause(text=text))
        if not self.speak:
            self._first_chunk = False
            self.emit(TtsChunk(text=text))
            return
        pcm = await self.executor.run(
            self.engine.synthesize,
            spoken,
            self.persona.voice,
            priority=Priority.URGENT if self._first_chunk else Priority.NORMAL,
        )
        self.emit(TtsChunk(text=text))
        if self._first_chunk:
            self._first_chunk = False
            self.emit(TtsFirstChunk(text=text, ms=round(1000 * len(pcm) / self.engine.sample_rate)))
        await self.push(
            TTSAudioFrame(pcm=pcm, sample_rate=self.engine.sample_rate, text=text), DOWN
        )
