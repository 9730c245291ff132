"""What happens in a session, as typed events: every kind there is, in one place.

Stages report what they decide and measure with `Stage.emit(event)`; the session adds its own
(`SessionStarted`, `Error`...), its timeline adds `TurnMetrics` and `TurnRecord`, and it
publishes them all on its bus (`voice_agent.eventbus`). Each consumer matches on the classes it
cares about: the timeline, the wire protocol's `WireEvents` (whose messages the session publishes
once, as `ClientMessage`s, for every consumer of the client's view), the OpenAI Realtime
conversation, the benches.

An event is a frozen dataclass stamped with the monotonic clock when it is made (`t_ns`). Its
`type` is its name on the wire and in logs (`TurnStarted` is `turn_started`), and `data` its
fields as a plain dict.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of all events (see the module docstring)."""

    type: ClassVar[str] = "event"
    t_ns: int = field(default_factory=time.monotonic_ns, compare=False)

    def __init_subclass__(cls) -> None:  # (no super(): slots make a new class)
        if "type" not in cls.__dict__:
            cls.type = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
        _TYPES[cls.type] = cls  # (the dataclass made with slots, made last, stays)

    @property
    def data(self) -> dict[str, Any]:
        """The event's fields, without its time."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "t_ns"}

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "t_ms": self.t_ns / 1e6, **self.data}


_TYPES: dict[str, type[Event]] = {}


def event_type(name: str) -> type[Event]:
    """The kind of event whose `type` is `name` (KeyError if none)."""
    return _TYPES[name]


# --- the session ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStarted(Event):
    session: str
    persona: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded(Event):
    session: str
    reason: str = ""
    """Why, when the session ended itself: `idle` (the caller said nothing after the persona's
    re-prompts), `max_duration` (the longest a session may last); "" otherwise."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Event):
    """Something failed; `fatal` ends the session. `code` for clients (`busy`, `timeout`,
    `engine`...; None lets the wire protocol choose)."""

    message: str
    source: str = ""
    fatal: bool = False
    code: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientMessage(Event):
    """A message for the session's client (the wire protocol's `state`, `transcript`,
    `interrupted`, `turn_metrics`, `error`): made once from the session's events, for the
    transport, metrics, the operators' feed and the terminal alike."""

    message: dict[str, Any]


# --- hearing the user: the VAD and the ASR ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class VadOnset(Event):
    """The first sign of speech (not yet confirmed)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VadFalseOnset(Event):
    """The sound after an onset ended before it counted as speech."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UserStartedSpeaking(Event):
    onset_ms_ago: int = 0
    """How long before this event the speech began."""
    audio_ms: int = 0
    """Where it began in the session's audio."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UserStoppedSpeaking(Event):
    """A pause (the turn may or may not be over)."""

    speech_end_ms_ago: int = 0
    silence_ms: int = 0
    audio_ms: int = 0
    """Where the speech ended in the session's audio."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Transcript(Event):
    role: str
    text: str
    final: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class AsrFinalStarted(Event):
    """The final transcript of a stretch of speech is being decoded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AsrStretchCapped(Event):
    """A stretch of speech reached the longest the ASR takes; it is cut there."""

    ms: int


# --- turn-taking ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnStarted(Event):
    turn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnResumed(Event):
    """The user went on after a pause, before the end of their turn."""

    turn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnReopened(Event):
    """The user went on after the end of their turn, before its reply was heard."""

    turn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnDiscarded(Event):
    turn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnModelScore(Event):
    """The end-of-turn model's verdict on a pause."""

    type: ClassVar[str] = "turn_model"
    probability: float
    finished: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnModelFailed(Event):
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UserTurnSent(Event):
    """The turn's text went to the LLM (`how`: preemptive, or at the end of the turn)."""

    turn: int
    how: str
    replaces: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PreemptionCancelled(Event):
    turn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfTurn(Event):
    turn: int
    reason: str
    probability: float | None = None
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BargeInCandidate(Event):
    """Speech began over the reply."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InterruptionConfirmed(Event):
    by: str
    speech_ms: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InterruptionRejected(Event):
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Ducked(Event):
    """The assistant's voice went down by `db` (it may be a barge-in)."""

    type: ClassVar[str] = "duck"
    db: float
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Unducked(Event):
    """The assistant's voice came back up."""

    type: ClassVar[str] = "unduck"
    db: float
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Interruption(Event):
    """The pipeline was interrupted."""

    reason: str


# --- the reply: the LLM, the TTS ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UserMessage(Event):
    """A user turn joined the history (`id`: its message)."""

    turn: int
    id: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnRetracted(Event):
    """A turn, and any reply to it, left the history (a later turn replaces it)."""

    turn: int
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryTruncated(Event):
    """The reply in the history keeps only what was heard (`id`: its message, if known)."""

    heard: str
    played_ms: int
    id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AssistantSaid(Event):
    """Fixed text the assistant was told to say, with no user turn (a `SayFrame`), went to be
    spoken and joined the history (`id`: its message). `why`: `greeting`, `reprompt`,
    `goodbye`, `time_up`."""

    why: str
    text: str
    id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AssistantBusy(Event):
    """The assistant works for the caller beyond its reply (a tool running): `busy` True at
    the start, False at the end. The idle clock does not count that time (voice_agent/turns/
    idle.py)."""

    busy: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmStarted(Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmFirstToken(Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmDone(Event):
    text: str
    id: str | None = None
    """The reply's message in the history."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstClause(Event):
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TtsChunk(Event):
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TtsFirstChunk(Event):
    text: str
    ms: int


# --- playback ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyAudioReady(Event):
    turn: int
    held: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyHeld(Event):
    turn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyReleased(Event):
    turn: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyText(Event):
    """Words of the reply, as they are played."""

    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BotStartedSpeaking(Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class BotStoppedSpeaking(Event):
    played_ms: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaybackInterrupted(Event):
    played_ms: int
    heard: str


# --- the timeline (voice_agent.timeline) ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnMetrics(Event):
    """When a turn's reply starts playing: each moment in ms after the end of the user's
    speech (None: it did not happen, or is not known)."""

    turn: int
    reason: str = ""
    speech_ms: float | None = None
    endpoint_ms: float | None = None
    asr_ms: float | None = None
    llm_first_token_ms: float | None = None
    first_clause_ms: float | None = None
    tts_first_chunk_ms: float | None = None
    voice_to_voice_ms: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnRecord(Event):
    """When a turn's reply is over: its whole timeline, for the JSON-lines log."""

    session: str
    at: float
    """Wall-clock time (s)."""
    turn: int
    reason: str = ""
    speech_ms: float | None = None
    endpoint_ms: float | None = None
    asr_ms: float | None = None
    llm_first_token_ms: float | None = None
    first_clause_ms: float | None = None
    tts_first_chunk_ms: float | None = None
    voice_to_voice_ms: float | None = None
    interrupted: bool = False
    played_ms: float | None = None
