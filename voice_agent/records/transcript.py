"""A session's transcript, as JSON lines: what was said, what was heard, and when.

`Transcript.feed(event)` takes the session's events as they come and returns the lines they
complete, each with `t_ms` (when, on the session clock: `voice_agent.records.clock`) and a
`type`:

- `session`: the first line (`record`, `session`, `persona`, `started_at` in UTC, `audio`);
- `user_turn`: at the end of each turn of the user: `turn`, `start_ms` and `end_ms` (where
  its speech began and ended), `text` (its final transcript), `reason` (why it ended). A turn
  the user went on with after its end is written again, whole, under the same number;
- `reply`: once a reply is over: `turn` (the turn it answers; null for fixed words),
  `start_ms` and `end_ms` (when it was heard; null if none of it was), `generated` (what the
  LLM wrote), `heard` (the words the caller heard), `interrupted`, `played_ms`, `said` (for
  fixed words the persona says with no LLM — `greeting`, `reprompt`, `goodbye`, `time_up` —
  else null);
- `interruption` (`by`, `speech_ms`, `text`), `turn_retracted` (`turn`), `error` (`message`,
  `code`, `fatal`, `source`);
- `session_ended`: the last line (`duration_ms`; `reason`: `idle` or `max_duration` when the
  session ended itself, else null). A transcript without it was cut short (the process ended
  first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from voice_agent.events import (
    AssistantSaid,
    BotStartedSpeaking,
    BotStoppedSpeaking,
    EndOfTurn,
    Error,
    Event,
    InterruptionConfirmed,
    LlmDone,
    LlmStarted,
    PlaybackInterrupted,
    ReplyText,
    SessionEnded,
    SessionStarted,
    Transcript,
    TurnRetracted,
    TurnStarted,
    UserMessage,
    UserStartedSpeaking,
    UserStoppedSpeaking,
)
from voice_agent.records.clock import SessionClock

Line = dict[str, Any]


@dataclass(slots=True)
class _Reply:
    turn: int | None
    generated: str | None = None
    start_ms: float | None = None
    end_ms: float | None = None
    heard: list[str] = field(default_factory=list)
    played_ms: int = 0
    interrupted: bool = False
    done: bool = False
    """The LLM has finished (its `llm_done`)."""
    over: bool = False
    """Playback has finished or was interrupted."""
    said: str | None = None
    """Why fixed words were said (`AssistantSaid.why`), for a reply no LLM wrote."""


class TranscriptLines:
    """One session's events in, transcript lines out (see the module docstring)."""

    def __init__(self, record: str, clock: SessionClock, *, audio: bool) -> None:
        self.record = record
        self.clock = clock
        self.audio = audio
        self._onset_ms: float | None = None
        self._turn_start: float | None = None
        self._speech_end: float | None = None
        self._said: list[str] = []
        self._answering = 0
        """The last turn that went to the LLM: the turn a reply answers."""
        self._reply: _Reply | None = None

    def feed(self, event: Event) -> list[Line]:
        """The lines `event` completes."""
        t = self.clock.ms_of(event.t_ns)
        match event:
            case SessionStarted(session=session, persona=persona):
                started = datetime.now(UTC).isoformat(timespec="milliseconds")
                return [
                    self._line(
                        "session",
                        t,
                        record=self.record,
                        session=session,
                        persona=persona,
                        started_at=started.replace("+00:00", "Z"),
                        audio=self.audio,
                    )
                ]
            case UserStartedSpeaking(onset_ms_ago=ago):
                self._onset_ms = round(t - ago, 1)
            case TurnStarted():
                self._turn_start, self._speech_end, self._said = self._onset_ms, None, []
            case UserStoppedSpeaking(speech_end_ms_ago=ago):
                self._speech_end = round(t - ago, 1)
            case Transcript(role="user", final=True, text=text) if text.strip():
                self._said.append(text.strip())
            case EndOfTurn(turn=turn, reason=reason, text=text):
                text = text.strip() or " ".join(self._said)
                start, end = self._turn_start, self._speech_end
                return [
                    self._line(
                        "user_turn", t, turn=turn, start_ms=start, end_ms=end, text=text,
                        reason=reason,
                    )
                ]  # fmt: skip
            case UserMessage(turn=turn):
                self._answering = turn
            case TurnRetracted(turn=turn):
                return [self._line("turn_retracted", t, turn=turn)]
            case InterruptionConfirmed(by=by, speech_ms=ms, text=text):
                return [self._line("interruption", t, by=by, speech_ms=ms, text=text)]
            case Error(message=message, code=code, fatal=fatal, source=source):
                line = self._line("error", t, message=message, code=code, fatal=fatal)
                return [{**line, "source": source}]
            case SessionEnded(reason=reason):
                last = self._line("session_ended", t, duration_ms=t, reason=reason or None)
                return [*self._close_reply(t), last]
            case _:
                return self._reply_event(event, t)
        return []

    def _reply_event(self, event: Event, t: float) -> list[Line]:
        out: list[Line] = []
        if isinstance(event, LlmStarted):
            out = self._close_reply(t)
            self._reply = _Reply(self._answering)
            return out
        if isinstance(event, AssistantSaid):
            out = self._close_reply(t)
            self._reply = _Reply(None, event.text, done=True, said=event.why)  # (answers no turn)
            return out
        ours = LlmDone | BotStartedSpeaking | ReplyText | BotStoppedSpeaking
        if not isinstance(event, ours) and (
            not isinstance(event, PlaybackInterrupted) or self._reply is None
        ):
            return out
        reply = self._reply
        if reply is None or (reply.over and not isinstance(event, LlmDone)):
            out = self._close_reply(t)  # (a reply that no LLM here made: a remote backbone's)
            reply = self._reply = _Reply(self._answering, done=True)
        match event:
            case LlmDone(text=text):
                reply.generated, reply.done = text, True
            case BotStartedSpeaking():
                reply.start_ms = t
            case ReplyText(text=text):
                reply.heard.append(text)
            case BotStoppedSpeaking(played_ms=played):
                reply.over, reply.end_ms, reply.played_ms = True, t, played
            case PlaybackInterrupted(played_ms=played, heard=heard):
                reply.over, reply.interrupted, reply.played_ms = True, True, played
                reply.heard = [heard]
                reply.end_ms = t if reply.start_ms is not None else None
        if reply.over and reply.done:
            out += self._close_reply(t)
        return out

    def _close_reply(self, t: float) -> list[Line]:
        reply, self._reply = self._reply, None
        if reply is None or (reply.generated is None and reply.start_ms is None):
            return []
        heard = " ".join("".join(reply.heard).split())
        return [
            self._line(
                "reply",
                t,
                turn=reply.turn,
                start_ms=reply.start_ms,
                end_ms=reply.end_ms if reply.over else t,
                generated=reply.generated,
                heard=heard,
                interrupted=reply.interrupted,
                played_ms=reply.played_ms,
                said=reply.said,
            )
        ]

    def _line(self, kind: str, t: float, **fields: Any) -> Line:
        return {"type": kind, "t_ms": t, **fields}
