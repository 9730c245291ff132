"""`LLMStage`: keeps the history and answers each user turn with a streamed reply; a
streaming call runs in the stage's process task, so an interruption cancels it between two
tokens, and the history keeps only what was heard."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import cast

from voice_agent.backbone.base import GenerationParams, LLMEngine
from voice_agent.backbone.stages.changes import PersonaChangeFrame
from voice_agent.events import (
    AssistantSaid,
    HistoryTruncated,
    LlmDone,
    LlmFirstToken,
    LlmStarted,
    TurnRetracted,
    UserMessage,
)
from voice_agent.executor import Runner
from voice_agent.frames import (
    BotStoppedSpeakingFrame,
    Direction,
    Frame,
    HistoryAddFrame,
    HistoryEditFrame,
    HistoryRemoveFrame,
    HistoryTruncateFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    PlaybackInterruptedFrame,
    ResponseRequestFrame,
    SayFrame,
    UserTurnFrame,
)
from voice_agent.history import History, Message
from voice_agent.persona import Persona
from voice_agent.pipeline import Stage

_SENTENCE = re.compile(r"[.!?](\s|$)")


class LLMStage(Stage):
    """Keeps the history; answers each user turn with a streamed reply (or, for a turn that
    does not ask for one, when a `ResponseRequestFrame` comes). Every message it adds is an
    event with the message's id: `user_message`, and `llm_done` for the reply. A client's
    `HistoryEditFrame`s edit the history, and a `PersonaChangeFrame` changes the persona.
    A `SayFrame`'s text is a reply of its own, as written (`assistant_said`)."""

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
        elif isinstance(frame, SayFrame):
            await self._say(frame)
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

    async def _say(self, frame: SayFrame) -> None:
        """A reply with fixed text: marked, spoken and kept (then cut to what was heard) like
        one the LLM made."""
        text = frame.text.strip()
        if not text:
            return
        self._reply_open = True
        self._reply = self.history.add_assistant(text)
        self.emit(AssistantSaid(why=frame.why, text=text, id=self._reply.id))
        await self.push(LLMResponseStartFrame())
        await self.push(LLMTextFrame(text=text))
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
