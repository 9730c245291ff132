"""The OpenAI Realtime wire format as `/v1/realtime` speaks it: client events in, objects out.

`parse_client_event` reads one client event: a JSON object with a known `type` and the fields
that type needs, or a `RealtimeError` whose code and message go back in an `error` event.
Fields a client may send that voice-agent does not use (tools, tracing, `event_id`...) are
accepted and ignored, as a compatible server must; a field it uses must be well typed.

`session.update` takes both the GA shape (`session.audio.input.turn_detection`, ...) and the
older beta one (`session.turn_detection`, `input_audio_format`, ...); `SessionChanges` is what
either asked for. Audio is `pcm16` (`audio/pcm`) at 24 kHz, mono, little-endian, base64.

`BETA_NAMES` renames the GA server events a beta client knows by other names.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from voice_agent.history import Role

RATE = 24000
"""The one audio rate the Realtime API speaks (pcm16 at 24 kHz, mono)."""

CLIENT_EVENTS = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.delete",
        "conversation.item.truncate",
        "response.create",
        "response.cancel",
    }
)

BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
}
"""GA server event names -> the beta names (a client that sends `OpenAI-Beta: realtime=v1`)."""

Modality = Literal["audio", "text"]


class RealtimeError(Exception):
    """A client event the server cannot act on: becomes an `error` event, the session goes on."""

    def __init__(
        self, code: str, message: str, param: str | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id
        """The `event_id` of the client event at fault, when it gave one."""


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """`server_vad` (or `semantic_vad`: our turn engine is both) with its knobs; absent knobs
    keep the persona's own."""

    type: str = "server_vad"
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    create_response: bool = True
    interrupt_response: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }


_UNSET: Any = object()


@dataclass(slots=True)
class SessionChanges:
    """What one `session.update` asks to change (only what it names)."""

    instructions: str | None = None
    voice: str | None = None
    turn_detection: TurnDetection | None = field(default=_UNSET)
    modalities: tuple[Modality, ...] | None = None

    @property
    def sets_turn_detection(self) -> bool:
        return self.turn_detection is not _UNSET


def parse_client_event(raw: str | bytes) -> dict[str, Any]:
    """One client event as a dict with a known `type`; `RealtimeError` otherwise."""
    if isinstance(raw, bytes):
        raise RealtimeError("invalid_event", "events are JSON text messages, not binary ones")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise RealtimeError("invalid_json", f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RealtimeError("invalid_event", "an event must be a JSON object with a 'type'")
    kind = data.get("type")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    if not isinstance(kind, str):
        raise RealtimeError("invalid_event", "the event has no 'type'", "type", event_id)
    if kind not in CLIENT_EVENTS:
        shown = json.dumps(kind)[:60]
        raise RealtimeError("unknown_event", f"unknown event type {shown}", "type", event_id)
    return data


def field_of(event: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    """`event[name]` if it has type `kind`; None if absent and not required."""
    value = event.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RealtimeError(
            "invalid_value", f"{event['type']}: '{name}' must be a {kind.__name__}", name
        )
    return value


def audio_of(event: dict[str, Any], max_bytes: int) -> bytes:
    """The PCM of an `input_audio_buffer.append` (whole 16-bit samples, at most max_bytes)."""
    text = field_of(event, "audio", str)
    if len(text) > max_bytes * 4 // 3 + 4:
        raise RealtimeError("audio_too_large", f"one append carries at most {max_bytes} bytes")
    try:
        pcm = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeError("invalid_audio", "'audio' is not base64", "audio") from None
    if len(pcm) % 2:
        raise RealtimeError(
            "invalid_audio",
            f"audio must be whole 16-bit samples; {len(pcm)} bytes are not",
            "audio",
        )
    return pcm


def session_changes(event: dict[str, Any]) -> SessionChanges:
    """What a `session.update` asks for, from its GA or beta shape."""
    session = event.get("session")
    if not isinstance(session, dict):
        raise RealtimeError("invalid_value", "session.update needs a 'session' object", "session")
    changes = SessionChanges()
    if session.get("instructions") is not None:
        changes.instructions = _typed(session, "instructions", str, "session.instructions")
    audio = _object(session, "audio")
    audio_in, audio_out = _object(audio, "input"), _object(audio, "output")
    voice = audio_out.get("voice", session.get("voice"))
    if voice is not None:
        changes.voice = _typed({"voice": voice}, "voice", str, "session.audio.output.voice")
    for where, fmt in (
        ("session.audio.input.format", audio_in.get("format")),
        ("session.audio.output.format", audio_out.get("format")),
        ("session.input_audio_format", session.get("input_audio_format")),
        ("session.output_audio_format", session.get("output_audio_format")),
    ):
        if fmt is not None:
            _check_format(fmt, where)
    if "turn_detection" in audio_in:
        changes.turn_detection = _turn_detection(audio_in["turn_detection"])
    elif "turn_detection" in session:
        changes.turn_detection = _turn_detection(session["turn_detection"])
    modalities = session.get("output_modalities", session.get("modalities"))
    if modalities is not None:
        changes.modalities = _modalities(modalities)
    return changes


def _object(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    return value if isinstance(value, dict) else {}


def _typed(data: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = data[name]
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        raise RealtimeError("invalid_value", f"{where} must be a {kind.__name__}", where)
    return value


def _check_format(fmt: Any, where: str) -> None:
    if isinstance(fmt, str):
        ok = fmt == "pcm16"
    elif isinstance(fmt, dict):
        ok = fmt.get("type") in ("audio/pcm", "pcm16") and fmt.get("rate", RATE) == RATE
    else:
        ok = False
    if not ok:
        raise RealtimeError(
            "unsupported_format",
            f"{where}: only pcm16 (audio/pcm) at {RATE} Hz is spoken here, not {fmt!r}",
            where,
        )


def _turn_detection(raw: Any) -> TurnDetection | None:
    where = "session.audio.input.turn_detection"
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") not in ("server_vad", "semantic_vad"):
        raise RealtimeError(
            "invalid_value", f"{where}: type must be server_vad, semantic_vad or null", where
        )
    threshold = raw.get("threshold")
    if threshold is not None and (
        not isinstance(threshold, int | float) or isinstance(threshold, bool)
        or not 0 <= threshold <= 1
    ):  # fmt: skip
        raise RealtimeError("invalid_value", f"{where}.threshold must be in [0, 1]", where)
    ms = {}
    for name in ("prefix_padding_ms", "silence_duration_ms"):
        value = raw.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10_000
        ):
            raise RealtimeError(
                "invalid_value", f"{where}.{name} must be whole ms in [0, 10000]", where
            )
        ms[name] = value
    flags = {}
    for name in ("create_response", "interrupt_response"):
        value = raw.get(name, True)
        if not isinstance(value, bool):
            raise RealtimeError("invalid_value", f"{where}.{name} must be true or false", where)
        flags[name] = value
    return TurnDetection(
        type=str(raw["type"]),
        threshold=None if threshold is None else float(threshold),
        prefix_padding_ms=ms["prefix_padding_ms"],
        silence_duration_ms=ms["silence_duration_ms"],
        **flags,
    )


def _modalities(raw: Any) -> tuple[Modality, ...]:
    where = "session.output_modalities"
    if not isinstance(raw, list) or not raw or any(m not in ("audio", "text") for m in raw):
        raise RealtimeError(
            "invalid_value", f'{where} must be ["audio"] or ["text"] (beta: both)', where
        )
    return tuple(dict.fromkeys(raw))


def message_text(item: Any) -> tuple[Role, str]:
    """(role, text) of a `conversation.item.create` item: a text message."""
    where = "item"
    if not isinstance(item, dict) or item.get("type", "message") != "message":
        raise RealtimeError(
            "unsupported_item", "only message items can be created here (no function calls)", where
        )
    role = item.get("role")
    if role not in ("user", "assistant", "system"):
        raise RealtimeError(
            "invalid_value", "item.role must be user, assistant or system", "item.role"
        )
    content = item.get("content")
    if not isinstance(content, list) or not content:
        raise RealtimeError("invalid_value", "item.content must be a list of parts", "item.content")
    texts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "text", "output_text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise RealtimeError(
                "unsupported_content",
                f"content of type {kind!r} cannot be added here: give text "
                "(append audio to the input buffer instead)",
                "item.content",
            )
    return cast(Role, role), " ".join(t.strip() for t in texts if t.strip())
