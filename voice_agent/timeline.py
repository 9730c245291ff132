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

STAGES = ("endpoint", "asr", "llm_first_token", "first_clause", "tts_first_chunk", "voice_to_voice")
"""The moments of a turn, in the order they usually come; each is reported as `<stage>_ms`."""

_MARK_OF_EVENT = {
    "llm_first_token": "llm_first_token",
    "first_clause": "first_clause",
    "tts_first_chunk": "tts_first_chunk",
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

    def feed(self, kind: str, data: dict[str, Any], t_ns: int) -> list[tuple[str, dict[str, Any]]]:
        """Take one session event; return the events this one completes (kind, data)."""
        turn = self._turn
        if kind == "user_started_speaking":
            self._onset_ns = t_ns - int(data.get("onset_ms_ago", 0)) * 1_000_000
        if kind in ("turn_started", "turn_reopened", "turn_resumed"):
            number = int(data.get("turn", 0))
            if turn is None or turn.turn != number or kind == "turn_started":
                self._turn = turn = _Turn(number, speech_start_ns=self._onset_ns)
            turn.marks.clear()  # a turn that goes on: what was done for it so far is moot
            turn.reason, turn.ended, turn.reported = "", False, False
            if self._answering is turn:
                self._answering = None
        elif turn is None:
            pass
        elif kind == "user_started_speaking":
            if not turn.ended:  # they go on (the turn-taking will say resumed)
                turn.marks.clear()
        elif kind == "user_stopped_speaking":
            turn.speech_end_ns = t_ns - int(data.get("speech_end_ms_ago", 0)) * 1_000_000
        elif kind == "transcript" and data.get("role") == "user" and data.get("final"):
            turn.marks.setdefault("asr", t_ns)
        elif kind == "end_of_turn":
            turn.marks.setdefault("endpoint", t_ns)
            turn.reason, turn.ended = str(data.get("reason", "")), True
            self._answering = turn
        else:
            return self._reply_event(kind, data, t_ns)
        return []

    def _reply_event(
        self, kind: str, data: dict[str, Any], t_ns: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """An event of the reply in the making: it is for the turn that ended last, or, before
        that turn has ended (a preemptive reply), for the turn in progress."""
        answering = self._answering or self._turn
        if kind == "preemption_cancelled" and self._turn is not None:
            for stage in ("llm_first_token", "first_clause", "tts_first_chunk"):
                self._turn.marks.pop(stage, None)
        elif kind in _MARK_OF_EVENT and answering is not None:
            answering.marks.setdefault(_MARK_OF_EVENT[kind], t_ns)
        elif kind == "bot_started_speaking" and self._answering is not None:
            turn, self._answering = self._answering, None
            turn.marks.setdefault("voice_to_voice", t_ns)
            turn.reported = True
            self._reply = turn
            return [("turn_metrics", self._metrics(turn))]
        elif kind in ("bot_stopped_speaking", "playback_interrupted") and self._reply is not None:
            reply, self._reply = self._reply, None
            interrupted = kind == "playback_interrupted"
            return [("turn_record", self._record(reply, interrupted, data.get("played_ms")))]
        return []

    def _metrics(self, turn: _Turn) -> dict[str, Any]:
        return {
            "turn": turn.turn,
            "reason": turn.reason,
            "speech_ms": turn.speech_ms(),
            **turn.since_speech_end(),
        }

    def _record(self, turn: _Turn, interrupted: bool, played_ms: object) -> dict[str, Any]:
        return {
            "session": self.session,
            "at": round(time.time(), 3),
            **self._metrics(turn),
            "interrupted": interrupted,
            "played_ms": played_ms if isinstance(played_ms, int | float) else None,
        }
