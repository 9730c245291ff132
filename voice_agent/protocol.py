"""The wire protocol of `/ws` and `/pcm` (docs/protocol.md): client messages in, events out.

Client messages are parsed strictly (`parse_client_message`): anything that is not one JSON
object of a known `type` with well-typed fields raises `ProtocolError`, whose `code` goes back
to the client in an `error` event. `WireEvents` turns a session's internal events (many kinds,
for metrics) into the few a client sees: `session`, `state`, `transcript`, `interrupted`,
`turn_metrics`, `error`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from voice_agent.events import Event

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


def error_event(code: str, message: str, *, fatal: bool) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "fatal": fatal}


_MARKS = {
    "asr": "asr_ms",
    "end_of_turn": "endpoint_ms",
    "llm_first_token": "llm_first_token_ms",
    "tts_first_chunk": "tts_first_chunk_ms",
}


class WireEvents:
    """Translates one session's internal events into the messages a client sees."""

    def __init__(self) -> None:
        self.state = "listening"
        self._turn = 0
        self._speech_end_ns: int | None = None
        self._marks: dict[str, int] = {}
        self._reason = ""
        self._reported = True
        self._said: list[str] = []
        self._speaking = False

    def translate(self, event: Event) -> Iterator[dict[str, Any]]:
        kind, data, t = event.type, event.data, event.t_ns
        if kind == "error":
            code = data.get("code") or ("internal" if data.get("fatal") else "engine")
            yield error_event(code, str(data.get("message", "")), fatal=bool(data.get("fatal")))
        elif kind == "transcript":
            if data.get("final") and data.get("role") == "user":
                self._mark("asr", t)
            yield {"type": "transcript", **data, "turn": self._turn}
        elif kind in ("turn_started", "turn_reopened", "turn_resumed"):
            self._new_turn(int(data.get("turn", self._turn)))
        elif kind == "user_started_speaking":
            self._marks = {}  # the turn goes on: what was done for it so far is moot
            yield from self._set_state("user_speaking")
        elif kind == "user_stopped_speaking":
            self._speech_end_ns = t - int(data.get("speech_end_ms_ago", 0)) * 1_000_000
            yield from self._set_state("speaking" if self._speaking else "listening")
        elif kind == "end_of_turn":
            self._reason = str(data.get("reason", ""))
            self._mark("end_of_turn", t)
            if not self._speaking:
                yield from self._set_state("thinking")
        elif kind == "preemption_cancelled":
            for mark in ("llm_first_token", "tts_first_chunk"):
                self._marks.pop(mark, None)
        elif kind in ("llm_first_token", "tts_first_chunk"):
            self._mark(kind, t)
        elif kind == "tts_chunk":
            self._said.append(str(data.get("text", "")))
            if self._speaking:
                yield self._assistant(final=False)
        elif kind == "bot_started_speaking":
            self._speaking, self._reply_turn = True, self._turn
            yield from self._set_state("speaking")
            yield from self._turn_metrics(t)
            if self._said:
                yield self._assistant(final=False)
        elif kind == "bot_stopped_speaking":
            if self._speaking and self._said:
                yield self._assistant(final=True)
            self._end_reply()
            yield from self._set_state("listening")
        elif kind == "playback_interrupted":
            if self._speaking:
                heard = str(data.get("heard", ""))
                yield {"type": "interrupted", "heard": heard, "played_ms": data.get("played_ms")}
                yield {
                    "type": "transcript",
                    "role": "assistant",
                    "text": heard,
                    "final": True,
                    "turn": self._reply_turn,
                }
            self._end_reply()

    def _assistant(self, *, final: bool) -> dict[str, Any]:
        text = " ".join(s.strip() for s in self._said if s.strip())
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

    def _new_turn(self, turn: int) -> None:
        if turn != self._turn:
            self._turn = turn
            self._marks = {}
            self._reported = False

    def _mark(self, name: str, t_ns: int) -> None:
        self._marks.setdefault(name, t_ns)

    def _set_state(self, state: str) -> Iterator[dict[str, Any]]:
        if state != self.state:
            self.state = state
            yield {"type": "state", "state": state}

    def _turn_metrics(self, t_ns: int) -> Iterator[dict[str, Any]]:
        if self._reported or self._speech_end_ns is None:
            return
        self._reported = True
        end = self._speech_end_ns

        def since(t: int | None) -> float | None:
            return None if t is None else round((t - end) / 1e6, 1)

        figures = {field: since(self._marks.get(mark)) for mark, field in _MARKS.items()}
        yield {
            "type": "turn_metrics",
            "turn": self._turn,
            **figures,
            "voice_to_voice_ms": since(t_ns),
            "reason": self._reason,
        }


__all__ = [
    "MAX_SDP_CHARS",
    "Bye",
    "Offer",
    "ProtocolError",
    "Start",
    "WireEvents",
    "error_event",
    "parse_client_message",
]
