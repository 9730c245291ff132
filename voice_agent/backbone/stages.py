"""The stages that drive the engines: ASR -> LLM -> TTS.

Each stage calls its engine through its session's lane of the shared `EngineExecutor` (sessions
take turns); a streaming LLM call runs in the stage's process task, so an interruption cancels it
between two tokens.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

from voice_agent.audio.pcm import Preroll
from voice_agent.backbone.base import ASREngine, ASRStream, GenerationParams, LLMEngine, TTSEngine
from voice_agent.backbone.chunking import ClauseChunker
from voice_agent.events import (
    AsrFinalStarted,
    AsrStretchCapped,
    FirstClause,
    HistoryTruncated,
    LlmDone,
    LlmFirstToken,
    LlmStarted,
    Transcript,
    TtsChunk,
    TtsFirstChunk,
    TurnRetracted,
    UserMessage,
)
from voice_agent.executor import Priority, Runner
from voice_agent.frames import (
    BotStoppedSpeakingFrame,
    ControlFrame,
    DataFrame,
    Direction,
    Frame,
    HistoryAddFrame,
    HistoryEditFrame,
    HistoryRemoveFrame,
    HistoryTruncateFrame,
    InputAudioFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    PlaybackInterruptedFrame,
    ResponseRequestFrame,
    SpokenRepliesFrame,
    SystemFrame,
    TranscriptionFrame,
    TranscriptRequestFrame,
    TTSAudioFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnFrame,
)
from voice_agent.history import History, Message
from voice_agent.persona import Persona
from voice_agent.pipeline import DOWN, Stage


@dataclass(slots=True, kw_only=True)
class PersonaChangeFrame(SystemFrame):
    """Behave and speak as `persona` from now on: its prompt and manners (the LLM stage), its
    voice with `tts`, the engine that speaks it (the TTS stage; None: the engine stays)."""

    persona: Persona
    tts: TTSEngine | None = None


@dataclass(slots=True, kw_only=True)
class _Utterance(ControlFrame):
    """An utterance to finalize: ordered, and kept through an interruption."""

    stream: ASRStream


@dataclass(slots=True, kw_only=True)
class _Partial(DataFrame):
    """Time to re-decode the utterance so far (skipped if it has ended meanwhile)."""

    stream: ASRStream


class ASRStage(Stage):
    """Feeds the user's audio between speech start and pause to an ASR stream; sends partial
    transcripts while the user speaks and the final one at the pause.

    Audio and speech start/stop are system frames, handled in arrival order (`accept` is cheap);
    decoding runs in the process task through the executor, so it never holds up an
    interruption. A partial decode is due every `partial_interval_ms` of audio (0: never), or at
    once when a `TranscriptRequestFrame` arrives. The last `preroll_ms` of audio before
    the speech start goes into the stream too: the VAD confirms speech some time after it began.
    Every stretch of speech gets exactly one final `TranscriptionFrame` (perhaps ""), even when
    the decode fails, so the turn logic downstream can count on it. A stretch is heard up to
    `max_stretch_ms` (an endless one, noise the VAD takes for speech, must not grow the decode
    without bound): the audio past that is not transcribed."""

    def __init__(
        self,
        engine: ASREngine,
        executor: Runner,
        partial_interval_ms: int = 0,
        preroll_ms: int = 0,
        max_stretch_ms: int = 60_000,
    ) -> None:
        super().__init__("asr")
        self.max_stretch_samples = engine.sample_rate * max_stretch_ms // 1000
        self._stretch = 0
        self.engine = engine
        self.executor = executor
        self.partial_samples = engine.sample_rate * partial_interval_ms // 1000
        self._preroll = Preroll(engine.sample_rate * preroll_ms // 1000)
        self._stream: ASRStream | None = None
        self._since_partial = 0
        self._last_partial = ""
        self._partial_waiting = False

    async def on_interruption(self) -> None:
        self._partial_waiting = False  # a queued partial was dropped with the other data frames

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, InputAudioFrame):
            await self.push(frame, direction)
            if self._stream is None:
                self._preroll.keep(frame.pcm)
                return
            if self._stretch >= self.max_stretch_samples:
                return
            self._stretch += len(frame.pcm)
            if self._stretch >= self.max_stretch_samples:
                self.emit(AsrStretchCapped(ms=self._stretch * 1000 // self.engine.sample_rate))
            self._stream.accept(frame.pcm)
            self._since_partial += len(frame.pcm)
            if self.partial_samples and self._since_partial >= self.partial_samples:
                self._request_partial()
        elif isinstance(frame, TranscriptRequestFrame):
            if self._stream is not None:
                self._request_partial()
        elif isinstance(frame, UserStartedSpeakingFrame):
            await self.push(frame, direction)
            self._stream = self.engine.stream()
            self._stretch = 0
            for pcm in self._preroll.take():
                self._stream.accept(pcm)
            self._since_partial, self._last_partial, self._partial_waiting = 0, "", False
        elif isinstance(frame, UserStoppedSpeakingFrame):
            await self.push(frame, direction)
            if self._stream is not None:
                self.queue_frame(_Utterance(stream=self._stream))
                self._stream = None
            else:  # no stream (it failed to open): still one final for the stretch
                await self.push(TranscriptionFrame(text="", final=True))
        elif isinstance(frame, _Partial):
            self._partial_waiting = False
            if frame.stream is self._stream:
                partial = frame.stream.partial
                text = (await self.executor.run(partial, priority=Priority.BACKGROUND)).strip()
                if text and text != self._last_partial and frame.stream is self._stream:
                    self._last_partial = text
                    self.emit(Transcript(role="user", text=text, final=False))
                    await self.push(TranscriptionFrame(text=text, final=False))
        elif isinstance(frame, _Utterance):
            self.emit(AsrFinalStarted())
            text = ""
            try:
                final = frame.stream.finalize
                text = (await self.executor.run(final, priority=Priority.URGENT)).strip()
            finally:  # one final per utterance, whatever happens: the turn logic counts them
                self.emit(Transcript(role="user", text=text, final=True))
                await self.push(TranscriptionFrame(text=text, final=True))
        else:
            await self.push(frame, direction)

    def _request_partial(self) -> None:
        if self._stream is not None and not self._partial_waiting:  # one at a time
            self._since_partial, self._partial_waiting = 0, True
            self.queue_frame(_Partial(stream=self._stream))


_SENTENCE = re.compile(r"[.!?](\s|$)")


class LLMStage(Stage):
    """Keeps the history; answers each user turn with a streamed reply (or, for a turn that
    does not ask for one, when a `ResponseRequestFrame` comes). Every message it adds is an
    event with the message's id: `user_message`, and `llm_done` for the reply. A client's
    `HistoryEditFrame`s edit the history, and a `PersonaChangeFrame` changes the persona."""

    def __init__(
        self,
        engine: LLMEngine,
        executor: Runner,
        persona: Persona,
        params: GenerationParams,
        context_tokens: int,
        history: History | None = None,
    ) -> None:
        super().__init__("llm")
        self.engine = engine
        self.executor = executor
        self.persona = persona
        self.params = params
        self.context_tokens = context_tokens
        self.history = history or History()
        self._reply_open = False
        """A reply has started and has not been played out or cut yet."""
        self._reply: Message | None = None
        self._turn = 0
        self._turn_first: Message | None = None
        """The user's last turn, and its first message in the history."""
        self._cut: Message | None = None
        """The reply that was open when the last interruption came: playback's report of
        what was heard of it truncates this one, whatever reply has started since."""

    async def on_interruption(self) -> None:
        # (the reply being generated was cancelled before this, so `_reply` is set)
        self._cut = self._reply if self._reply_open else None
        self._reply_open = False

    async def setup(self) -> None:
        # An engine that can (llama.cpp) evaluates the persona's system prompt and examples now,
        # in the background, so the first reply only evaluates the user's words.
        prefill = getattr(self.engine, "prefill", None)
        if prefill is not None:
            head = self.history.prompt(self.persona, self.context_tokens - self.params.max_tokens)
            prefill(head, self.params)

    async def cleanup(self) -> None:
        end = getattr(self.engine, "end_conversation", None)
        if end is not None and self.params.conversation is not None:
            end(self.params.conversation)

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, UserTurnFrame):
            await self.push(frame, direction)
            if frame.replaces and frame.replaces == self._turn and self._turn_first is not None:
                # The user went on talking: their turn so far, and a reply they never heard,
                # make way for the whole turn.
                gone = self.history.retract_from(self._turn_first)
                self.emit(TurnRetracted(turn=frame.replaces, ids=tuple(m.id for m in gone)))
            self._turn = frame.turn
            self._turn_first = self.history.add_user(frame.text)
            self.emit(UserMessage(turn=frame.turn, id=self._turn_first.id, text=frame.text))
            if frame.respond:
                await self._respond()
        elif isinstance(frame, ResponseRequestFrame):
            await self._respond()
        elif isinstance(frame, PlaybackInterruptedFrame):
            if self._cut is not None:
                self.history.truncate(self._cut, frame.heard_text)
                self.emit(
                    HistoryTruncated(
                        id=self._cut.id,
                        heard=frame.heard_text,
                        played_ms=frame.played_ms,
                    )
                )
                self._cut = None
            await self.push(frame, direction)
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._reply_open = False
            await self.push(frame, direction)
        elif isinstance(frame, HistoryEditFrame):
            self._edit(frame)
            await self.push(frame, direction)
        elif isinstance(frame, PersonaChangeFrame):
            self.persona = frame.persona
            await self.push(frame, direction)
        else:
            await self.push(frame, direction)

    def _edit(self, frame: HistoryEditFrame) -> None:
        history = self.history
        if isinstance(frame, HistoryAddFrame):
            try:
                history.add(frame.role, frame.text, frame.after, frame.message_id)
            except KeyError:  # its place is gone since the client chose it: it goes last
                history.add(frame.role, frame.text, None, frame.message_id)
        with contextlib.suppress(KeyError):  # gone already (a reply nothing of was heard)
            if isinstance(frame, HistoryRemoveFrame):
                history.remove(frame.message_id)
            elif isinstance(frame, HistoryTruncateFrame):
                history.truncate(history.find(frame.message_id), frame.heard)

    async def _respond(self) -> None:
        budget = self.context_tokens - self.params.max_tokens
        messages = self.history.prompt(self.persona, budget)
        reply = ""
        self._reply_open, self._reply = True, None
        await self.push(LLMResponseStartFrame())
        self.emit(LlmStarted())
        try:
            async for piece in self._pieces(messages):
                if not reply:
                    self.emit(LlmFirstToken())
                reply += piece
                cut = _sentence_limit_cut(reply, self.persona.style.max_sentences)
                if cut is not None:
                    await self.push(LLMTextFrame(text=piece[: len(piece) - (len(reply) - cut)]))
                    reply = reply[:cut]
                    break
                await self.push(LLMTextFrame(text=piece))
        except Exception:
            if self.persona.apology:  # say why it stops, rather than nothing
                said = reply.rstrip()
                gap = "" if not said else " " if said[-1] in ".!?" else "... "
                await self.push(LLMTextFrame(text=gap + self.persona.apology))
            await self.push(LLMResponseEndFrame())  # close the reply: what was said is spoken
            raise
        finally:
            if reply.strip():
                self._reply = self.history.add_assistant(reply.strip())
            reply_id = self._reply.id if self._reply is not None else None
            self.emit(LlmDone(text=reply.strip(), id=reply_id))
        await self.push(LLMResponseEndFrame())

    def _pieces(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        """The reply's pieces: from the engine's own async stream where it has one (a server:
        no pool thread waits for its tokens), else through the executor."""
        astream = getattr(self.engine, "astream", None)
        if astream is not None:
            return cast(AsyncIterator[str], astream(messages, self.params))
        return self.executor.stream(self.engine.stream(messages, self.params))


def _sentence_limit_cut(text: str, max_sentences: int) -> int | None:
    """Index just past the `max_sentences`-th sentence end, if the text has gone beyond it."""
    ends = [m.start() + 1 for m in _SENTENCE.finditer(text)]
    if len(ends) >= max_sentences and len(text[ends[max_sentences - 1] :].strip()) > 0:
        return ends[max_sentences - 1]
    return None


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
