"""One `/v1/realtime` session: the Realtime API's conversation model over a voice-agent Session.

The client's events become what our pipeline understands, and the session's events become the
server events a Realtime client expects. `RealtimeConversation` dispatches them to the parts
that keep the protocol's state:

- `session.update` goes to `RealtimeConfig` (config.py): persona, voice, turn detection,
  modalities;
- the input audio buffer and the user's turns to `UserInput` (input.py);
- the replies, as responses, to `Responses` (responses.py);
- the items, each the message of the session's History it stands for, to `Items` (items.py).

The conversation is protocol logic only: it knows of its session what a `SessionLink` gives it,
and acts on it through frames (the ones `on_audio` and `on_client_event` return, which go in
with the client's audio, and the changes and history edits it hands to `SessionLink.change`)
and through `SessionLink.interrupt`.
"""

from __future__ import annotations

from typing import Any

from voice_agent.events import (
    BotStoppedSpeaking,
    EndOfTurn,
    Error,
    Event,
    HistoryTruncated,
    LlmDone,
    LlmStarted,
    PlaybackInterrupted,
    ReplyText,
    Transcript,
    TtsChunk,
    TurnDiscarded,
    TurnReopened,
    TurnRetracted,
    TurnStarted,
    UserMessage,
    UserStartedSpeaking,
    UserStoppedSpeaking,
)
from voice_agent.frames import Direction, Frame
from voice_agent.openai_realtime.config import RealtimeConfig, SessionLink
from voice_agent.openai_realtime.input import UserInput
from voice_agent.openai_realtime.items import Items, Send
from voice_agent.openai_realtime.responses import Responses
from voice_agent.openai_realtime.schema import (
    RealtimeError,
    SessionChanges,
    field_of,
    session_changes,
)
from voice_agent.persona import PersonaStore


class RealtimeConversation:
    """The protocol state of one `/v1/realtime` session (see the module docstring)."""

    def __init__(
        self,
        link: SessionLink,
        personas: PersonaStore,
        send: Send,
        *,
        model: str,
        beta: bool = False,
        max_buffer_ms: float = 60_000,
    ) -> None:
        self.link = link
        self.send = send
        self.config = RealtimeConfig(link, personas, model=model, beta=beta)
        self._items = Items(send, link.change)
        self._input = UserInput(self.config, self._items, send, max_buffer_ms=max_buffer_ms)
        self._responses = Responses(link, self.config, self._items, send)

    # --- client events ---------------------------------------------------------------------

    def hello(self) -> None:
        """Greet the client: `session.created`."""
        self.send({"type": "session.created", "session": self.config.as_json()})

    def on_client_event(self, event: dict[str, Any]) -> list[Frame]:
        """Act on one parsed client event (not `append`: see `on_audio`); the frames to feed
        the pipeline, in order. `RealtimeError` for an event that cannot be acted on."""
        kind = event["type"]
        if kind == "session.update":
            frames = self._update(session_changes(event))
            self.send({"type": "session.updated", "session": self.config.as_json()})
            return frames
        if kind == "input_audio_buffer.commit":
            return self._input.commit()
        if kind == "input_audio_buffer.clear":
            return self._input.clear()
        if kind == "conversation.item.create":
            self._items.create(event)
            return []
        if kind == "conversation.item.delete":
            self._items.delete(field_of(event, "item_id", str))
            return []
        if kind == "conversation.item.truncate":
            self._truncate(field_of(event, "item_id", str), field_of(event, "audio_end_ms", int))
            return []
        if kind == "response.create":
            return self._responses.create()
        if kind == "response.cancel":
            self._responses.cancel()
            return []
        raise RealtimeError("unknown_event", f"unknown event type {kind!r}", "type")

    def on_audio(self, samples: int) -> list[Frame]:
        """`samples` of audio (at 24 kHz) were appended; frames to send before that audio."""
        return self._input.on_audio(samples)

    def _update(self, changes: SessionChanges) -> list[Frame]:
        manual = self.config.turn_detection is None
        for frame in self.config.apply(changes):
            self.link.change(frame, Direction.DOWNSTREAM)
        if manual and self.config.turn_detection is not None:
            return self._input.detection_on()
        return []

    def _truncate(self, item_id: str, audio_end_ms: int) -> None:
        item = self._items.to_truncate(item_id, audio_end_ms)
        if not self._responses.truncate_when_stopped(item, audio_end_ms):
            self._items.truncate(item, audio_end_ms)

    # --- session events --------------------------------------------------------------------

    def on_session_event(self, event: Event) -> None:
        """Act on one event of the session: the server events it means go to the client."""
        match event:
            case UserStartedSpeaking(audio_ms=ms):
                self._input.speech_started(ms)
            case UserStoppedSpeaking(audio_ms=ms):
                self._input.speech_stopped(ms)
            case TurnStarted() | TurnReopened():
                self._input.turn_started()
            case Transcript(role="user", final=False, text=text):
                self._input.partial(text)
            case UserMessage(turn=turn, id=message):
                self._input.turn_message(turn, message)
            case TurnRetracted(ids=ids):
                self._items.forget(set(ids))
                self._input.forget(set(ids))
            case HistoryTruncated(id=str(message), heard=heard) if not heard.strip():
                self._items.message_gone(message)  # a reply nothing of was heard: removed
            case EndOfTurn(turn=turn, text=text):
                self._input.turn_ended(turn, text)
            case TurnDiscarded():
                self._input.turn_discarded()
            case LlmStarted():
                self._responses.reply_started()
            case ReplyText(text=text):
                self._responses.reply_text(text)  # spoken: as it is heard
            case TtsChunk(text=text) if not self.config.spoken:
                self._responses.reply_text(text)
            case LlmDone(text=text, id=message):
                self._responses.reply_done(text, message)
            case BotStoppedSpeaking():
                self._responses.played()
            case PlaybackInterrupted(heard=heard, played_ms=played_ms):
                self._responses.interrupted(heard, played_ms)
            case Error(code=code, message=message):
                self._error(code, message)

    def on_reply_audio(self, samples: int) -> tuple[str, str]:
        """The reply's audio goes out (`samples` at 24 kHz): its response opens first if it
        has not; the ids (response, item) its delta belongs to."""
        return self._responses.reply_audio(samples)

    def _error(self, code: str | None, message: str) -> None:
        self.send(
            {
                "type": "error",
                "error": {
                    "type": "server_error",
                    "code": code or "engine_error",
                    "message": message,
                    "param": None,
                },
            }
        )
        self._responses.failed()
