"""The wire protocol of `/ws` and `/pcm` (docs/protocol.md): client messages in, events out.

Client messages are parsed strictly (`parse_client_message`): anything that is not one JSON
object of a known `type` with well-typed fields raises `ProtocolError`, whose `code` goes back
to the client in an `error` event. `WireEvents` turns a session's internal events (many kinds,
for metrics) into the few a client sees: `state`, `transcript`, `interrupted`, `turn_metrics`
(made by `voice_agent.timeline`), `error`, and `session_ended` when the session ends itself.

`redact` hides secrets in a message that may name a configured URL; `usable_candidates` drops
the ICE candidates of an offer that cannot be used.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from voice_agent.events import (
    BotStartedSpeaking,
    BotStoppedSpeaking,
    EndOfTurn,
    Error,
    Event,
    PlaybackInterrupted,
    SessionEnded,
    Transcript,
    TtsChunk,
    TurnMetrics,
    TurnReopened,
    TurnResumed,
    TurnStarted,
    UserStartedSpeaking,
    UserStoppedSpeaking,
)

log = logging.getLogger(__name__)

MAX_SDP_CHARS = 64 * 1024
"""A browser's audio-only offer is 2-6 KB; this leaves room and refuses absurd ones."""


class ProtocolError(Exception):
    """A message the protocol does not allow; `code` is the `error` event's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


PersonaId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class Offer(_Message):
    """`/ws`: a WebRTC offer (ICE gathered, no trickle)."""

    type: Literal["offer"]
    sdp: Annotated[str, Field(min_length=1, max_length=MAX_SDP_CHARS)]
    persona: PersonaId | None = None


class Start(_Message):
    """`/pcm`: start a session whose audio is PCM at `sample_rate`."""

    type: Literal["start"]
    sample_rate: Annotated[int, Field(ge=8000, le=48000)]
    persona: PersonaId | None = None


class Bye(_Message):
    """Either endpoint: end the session."""

    type: Literal["bye"]


ClientMessage = Annotated[Offer | Start | Bye, Field(discriminator="type")]
_client_message: TypeAdapter[Offer | Start | Bye] = TypeAdapter(ClientMessage)


def parse_client_message(raw: str | bytes) -> Offer | Start | Bye:
    """One client message; `ProtocolError("bad_message", ...)` naming what is wrong."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_message", f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_message", "a message must be a JSON object with a 'type'")
    kind = data.get("type")
    if kind not in ("offer", "start", "bye"):
        shown = json.dumps(kind)[:40] if kind is not None else "missing"
        raise ProtocolError(
            "bad_message", f"unknown message type {shown} (expected offer, start or bye)"
        )
    try:
        return _client_message.validate_python(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"][1:]) or "message"
        raise ProtocolError("bad_message", f"{kind}: {where}: {first['msg']}") from None


_SECRETS_IN_URLS = re.compile(
    r"(?i)(//[^/@\s]*:)[^/@\s]*(@)|((?:token|key|api_key|access_token|secret|password)=)[^&#\s]+"
)


def redact(text: str) -> str:
    """`text` with the passwords of URLs and secret-looking query values as `***`: for a
    message that goes to the log or to a client and may name a configured URL."""
    return _SECRETS_IN_URLS.sub(
        lambda m: f"{m[1]}***{m[2]}" if m[1] is not None else f"{m[3]}***", text
    )


def usable_candidates(sdp: str) -> str:
    """`sdp` without the ICE candidates that cannot be used: fewer than 8 fields, a component,
    priority or port that is no number, a port outside 1-65535, a transport other than UDP or
    TCP. aiortc fails on some of them (an `AssertionError`), and takes others that break its
    ICE agent (a port of 99999 closes the peer connection's socket, with tracebacks)."""
    lines = sdp.split("\n")
    return "\n".join(
        line
        for line in lines
        if not line.startswith("a=candidate:") or _usable_candidate(line[12:].strip())
    )


def _usable_candidate(candidate: str) -> bool:
    bits = candidate.split()
    if len(bits) < 8 or bits[6] != "typ" or bits[2].lower() not in ("udp", "tcp"):
        return False
    try:
        component, priority, port = int(bits[1]), int(bits[3]), int(bits[5])
    except ValueError:
        return False
    return 1 <= component <= 256 and 0 <= priority < 2**32 and 1 <= port <= 65535


def error_event(code: str, message: str, *, fatal: bool) -> dict[str, Any]:
    """The `error` event of docs/protocol.md."""
    return {"type": "error", "code": code, "message": message, "fatal": fatal}


class WireEvents:
    """Translates one session's internal events into the messages a client sees."""

    def __init__(self) -> None:
        self.state = "listening"
        self._turn = 0
        self._speaking = False
        self._reply_turn = 0
        self._answering = 0
        """The last turn that ended, until its reply starts: the turn a reply belongs to."""
        self._said: list[str] = []

    def translate(self, event: Event) -> Iterator[dict[str, Any]]:
        match event:
            case Error(code=code, message=message, fatal=fatal):
                code = code or ("internal" if fatal else "engine")
                yield error_event(code, message, fatal=fatal)
            case Transcript(role=role, text=text, final=final):
                turn = self._turn
                yield {
                    "type": "transcript",
                    "role": role,
                    "text": text,
                    "final": final,
                    "turn": turn,
                }
            case TurnMetrics():
                yield {"type": "turn_metrics", **event.data}
            case SessionEnded(reason=reason) if reason:
                yield {"type": "session_ended", "reason": reason}
            case TurnStarted(turn=turn) | TurnReopened(turn=turn) | TurnResumed(turn=turn):
                self._turn = turn
            case UserStartedSpeaking():
                yield from self._set_state("user_speaking")
            case UserStoppedSpeaking():
                yield from self._set_state("speaking" if self._speaking else "listening")
            case EndOfTurn():
                self._answering = self._turn
                if not self._speaking:
                    yield from self._set_state("thinking")
            case TtsChunk(text=text):
                self._said.append(text)
                if self._speaking:
                    yield self._assistant(final=False)
            case BotStartedSpeaking():
                self._speaking, self._reply_turn = True, self._answering or self._turn
                self._answering = 0
                yield from self._set_state("speaking")
                if self._said:
                    yield self._assistant(final=False)
            case BotStoppedSpeaking():
                if self._speaking and self._said:
                    yield self._assistant(final=True)
                self._end_reply()
                yield from self._set_state("listening")
            case PlaybackInterrupted(heard=heard, played_ms=played_ms):
                if self._speaking:
                    turn = self._reply_turn
                    yield {
                        "type": "interrupted",
                        "heard": heard,
                        "played_ms": played_ms,
                        "turn": turn,
                    }
                    yield self._assistant_said(heard, final=True)
                self._end_reply()

    def _assistant(self, *, final: bool) -> dict[str, Any]:
        return self._assistant_said(" ".join(s.strip() for s in self._said if s.strip()), final)

    def _assistant_said(self, text: str, final: bool) -> dict[str, Any]:
        return {
            "type": "transcript",
            "role": "assistant",
            "text": text,
            "final": final,
            "turn": self._reply_turn,
        }

    def _end_reply(self) -> None:
        self._speaking = False
        self._said = []

    def _set_state(self, state: str) -> Iterator[dict[str, Any]]:
        if state != self.state:
            self.state = state
            yield {"type": "state", "state": state}


__all__ = [
    "MAX_SDP_CHARS",
    "Bye",
    "Offer",
    "ProtocolError",
    "Start",
    "WireEvents",
    "error_event",
    "parse_client_message",
    "redact",
    "usable_candidates",
]
