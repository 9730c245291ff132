"""Per-turn timelines: where every millisecond of a turn went, from a session's own events.

A `TurnTimeline` reads a session's events as they happen (monotonic ns) and keeps, for the
user's turn in progress and for the reply playing, when each thing happened: speech start and
end (VAD), the end-of-turn decision and its reason, the ASR final, the LLM's first token, the
first clause handed to TTS, the first synthesized audio, the first audio frame sent, and, when
the reply ends, whether it was interrupted and how much was played.

It answers with two events of its own:
- `turn_metrics`, once per turn, when its reply starts playing: each moment in ms after the end
  of the user's speech (docs/protocol.md has the fields), for clients, the dashboard, Prometheus;
- `turn_record`, when the reply has ended: the whole timeline, for the JSONL log.

A turn the user goes on with (they paused, then spoke again) starts its stage marks over: what
was done for the shorter turn (a preemptive reply) was thrown away. A reply belongs to the last
turn that ended, not to the one in progress: a user who starts the next turn while the assistant
is still thinking hears the reply to the turn before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from voice_agent.events import (
    BotStartedSpeaking,
    BotStoppedSpeaking,
    EndOfTurn,
    Event,
    FirstClause,
    LlmFirstToken,
    PlaybackInterrupted,
    PreemptionCancelled,
    Transcript,
    TtsFirstChunk,
    TurnMetrics,
    TurnRecord,
    TurnReopened,
    TurnResumed,
    TurnStarted,
    UserStartedSpeaking,
    UserStoppedSpeaking,
)

STAGES = ("endpoint", "asr", "llm_first_token", "first_clause", "tts_first_chunk", "voice_to_voice")
"""The moments of a turn, in the order they usually come; each is reported as `<stage>_ms`."""

_MARK_OF_EVENT: dict[type[Event], str] = {
    LlmFirstToken: "llm_first_token",
    FirstClause: "first_clause",
    TtsFirstChunk: "tts_first_chunk",
}


@dataclass(slots=True)
class _Turn:
    turn: int
    speech_start_ns: int | None = None
    speech_end_ns: int | None = None
    reason: str = ""
    marks: dict[str, int] = field(default_factory=dict)
    ended: bool = False
    reported: bool = False

    def since_speech_end(self) -> dict[str, float | None]:
        end = self.speech_end_ns

        def ms(t: int | None) -> float | None:
            return None if t is None or end is None else round((t - end) / 1e6, 1)

        return {f"{stage}_ms": ms(self.marks.get(stage)) for stage in STAGES}

    def speech_ms(self) -> float | None:
        if self.speech_start_ns is None or self.speech_end_ns is None:
            return None
        return round((self.speech_end_ns - self.speech_start_ns) / 1e6, 1)


class TurnTimeline:
    """One session's turns (see the module docstring)."""

    def __init__(self, session: str) -> None:
        self.session = session
        self._turn: _Turn | None = None
        """The user's turn being taken (or just taken)."""
        self._answering: _Turn | None = None
        """The last turn that ended, until its reply starts playing."""
        self._reply: _Turn | None = None
        """The turn whose reply is playing."""
        self._onset_ns: int | None = None
        """When the user last started speaking (a turn may be opened after it: a barge-in)."""

    def feed(self, event: Event) -> list[Event]:
        """Take one session event; return the events it completes (`TurnMetrics`,
        `TurnRecord`), stamped with its time."""
        t_ns, turn = event.t_ns, self._turn
        if isinstance(event, UserStartedSpeaking):
            self._onset_ns = t_ns - event.onset_ms_ago * 1_000_000
        match event:
            case TurnStarted(turn=number) | TurnReopened(turn=number) | TurnResumed(turn=number):
                if turn is None or turn.turn != number or isinstance(event, TurnStarted):
                    self._turn = turn = _Turn(number, speech_start_ns=self._onset_ns)
                turn.marks.clear()  # a turn that goes on: what was done for it so far is moot
                turn.reason, turn.ended, turn.reported = "", False, False
                if self._answering is turn:
                    self._answering = None
            case _ if turn is None:
                pass
            case UserStartedSpeaking():
                if not turn.ended:  # they go on (the turn-taking will say resumed)
                    turn.marks.clear()
            case UserStoppedSpeaking(speech_end_ms_ago=ago):
                turn.speech_end_ns = t_ns - ago * 1_000_000
            case Transcript(role="user", final=True):
                turn.marks.setdefault("asr", t_ns)
            case EndOfTurn(reason=reason):
                turn.marks.setdefault("endpoint", t_ns)
                turn.reason, turn.ended = reason, True
                self._answering = turn
            case _:
                return self._reply_event(event)
        return []

    def _reply_event(self, event: Event) -> list[Event]:
        """An event of the reply in the making: it is for the turn that ended last, or, before
        that turn has ended (a preemptive reply), for the turn in progress."""
        answering, t_ns = self._answering or self._turn, event.t_ns
        if isinstance(event, PreemptionCancelled) and self._turn is not None:
            for stage in ("llm_first_token", "first_clause", "tts_first_chunk"):
                self._turn.marks.pop(stage, None)
        elif type(event) in _MARK_OF_EVENT and answering is not None:
            answering.marks.setdefault(_MARK_OF_EVENT[type(event)], t_ns)
        elif isinstance(event, BotStartedSpeaking) and self._answering is not None:
            turn, self._answering = self._answering, None
            turn.marks.setdefault("voice_to_voice", t_ns)
            turn.reported = True
            self._reply = turn
            return [TurnMetrics(**self._metrics(turn), t_ns=t_ns)]
        elif isinstance(event, BotStoppedSpeaking | PlaybackInterrupted) and self._reply:
            reply, self._reply = self._reply, None
            interrupted = isinstance(event, PlaybackInterrupted)
            return [
                TurnRecord(
                    session=self.session,
                    at=round(time.time(), 3),
                    **self._metrics(reply),
                    interrupted=interrupted,
                    played_ms=event.played_ms,
                    t_ns=t_ns,
                )
            ]
        return []

    def _metrics(self, turn: _Turn) -> dict[str, Any]:
        return {
            "turn": turn.turn,
            "reason": turn.reason,
            "speech_ms": turn.speech_ms(),
            **turn.since_speech_end(),
        }
