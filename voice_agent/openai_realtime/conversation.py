"""One `/v1/realtime` session: the Realtime API's conversation model over a voice-agent Session.

The client's events become what our pipeline understands, and the session's events become the
server events a Realtime client expects:

- `session.update` goes to `RealtimeConfig` (openai_realtime/config.py): persona, voice, turn
  detection, modalities.
- A user turn is an item: `speech_started` when the turn opens (never for a backchannel that
  does not interrupt), `speech_stopped`, `committed`, `conversation.item.created` and the
  transcription's `completed` when it ends.
- A reply is a response, opened when its first audio (or text) goes out, so a preemptive reply
  that the user's next words cancel never shows; `response.done` says `completed`, or
  `cancelled` after a barge-in or `response.cancel` (then the item keeps only what was heard,
  and `conversation.item.truncated` says how much).

Item ids are ours (`item_...`); each maps to the message of the session's History it stands
for, so `delete` and `truncate` act on what the LLM will read next.

The conversation is protocol logic only: it knows of its session what a `SessionLink` gives it,
and acts on it through frames (the ones `on_audio` and `on_client_event` return, which go in
with the client's audio, and the changes and history edits it hands to `SessionLink.change`)
and through `SessionLink.interrupt`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from voice_agent.events import Event
from voice_agent.frames import (
    CommitTurnFrame,
    Direction,
    DiscardTurnFrame,
    Frame,
    HistoryAddFrame,
    HistoryEditFrame,
    HistoryRemoveFrame,
    HistoryTruncateFrame,
    ResponseRequestFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voice_agent.history import new_message_id
from voice_agent.openai_realtime.config import RealtimeConfig, SessionLink
from voice_agent.openai_realtime.items import Item, Reply, Response, new_id
from voice_agent.openai_realtime.schema import (
    RATE,
    RealtimeError,
    SessionChanges,
    field_of,
    message_text,
    session_changes,
)
from voice_agent.persona import PersonaStore

Send = Callable[[dict[str, Any]], None]


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
        self.personas = personas
        self.send = send
        self.config = RealtimeConfig(link, personas, model=model, beta=beta)
        self.beta = beta
        self.max_buffer_ms = max_buffer_ms
        self.input_ms = 0.0
        """Audio the client has appended, in ms."""
        self._speech_ms = (0, 0)
        """Where the last speech the VAD heard began and ended, in ms of the input audio."""
        self._buffer_ms = 0.0
        """Audio appended since the last commit or clear, when the client marks its turns."""
        self._items: dict[str, Item] = {}
        self._last_item: str | None = None
        self._user: Item | None = None
        """The user's turn being taken (an item not yet committed)."""
        self._turn_items: OrderedDict[int, Item] = OrderedDict()
        """User items by the turn ids the pipeline gave them (the last few)."""
        self._response: Response | None = None
        self._replies: deque[Reply] = deque()
        """Replies being made, oldest first: the first is the response's (or will be, when its
        audio goes out); a later one is made while the first plays (it was not interrupted)."""
        self._truncate_after: tuple[str, int] | None = None
        self._gone: set[str] = set()
        """History messages that are gone, though items still stand for them (replies cut or
        truncated to nothing): nothing can be placed after them."""

    # --- client events ---------------------------------------------------------------------

    def hello(self) -> None:
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
            return self._commit()
        if kind == "input_audio_buffer.clear":
            return self._clear()
        if kind == "conversation.item.create":
            self._create_item(event)
            return []
        if kind == "conversation.item.delete":
            self._delete_item(field_of(event, "item_id", str))
            return []
        if kind == "conversation.item.truncate":
            self._truncate_item(
                field_of(event, "item_id", str), field_of(event, "audio_end_ms", int)
            )
            return []
        if kind == "response.create":
            return self._create_response()
        if kind == "response.cancel":
            if self._response is None:
                raise RealtimeError("response_cancel_not_active", "no response is in progress")
            self.link.interrupt("response.cancel")
            return []
        raise RealtimeError("unknown_event", f"unknown event type {kind!r}", "type")

    def on_audio(self, samples: int) -> list[Frame]:
        """`samples` of audio (at 24 kHz) were appended; frames to send before that audio."""
        ms = 1000.0 * samples / RATE
        self.input_ms += ms
        if self.config.turn_detection is not None:
            return []
        if self._buffer_ms + ms > self.max_buffer_ms:
            raise RealtimeError(
                "input_audio_buffer_full",
                f"the input audio buffer holds at most {self.max_buffer_ms / 1000:.0f} s: "
                "commit or clear it (this audio was dropped)",
            )
        first = self._buffer_ms == 0
        self._buffer_ms += ms
        if first:
            self._user = Item(new_id("item"), "user", "input_audio")
            return [UserStartedSpeakingFrame()]
        return []

    def _update(self, changes: SessionChanges) -> list[Frame]:
        manual = self.config.turn_detection is None
        for frame in self.config.apply(changes):
            self.link.change(frame, Direction.DOWNSTREAM)
        if manual and self.config.turn_detection is not None and self._buffer_ms:
            self._buffer_ms, self._user = 0.0, None
            return [UserStoppedSpeakingFrame(), DiscardTurnFrame()]  # the client's stretch ends
        return []

    def _commit(self) -> list[Frame]:
        if self.config.turn_detection is None:
            if not self._buffer_ms:
                raise RealtimeError(
                    "input_audio_buffer_commit_empty", "the input audio buffer is empty"
                )
            self._buffer_ms = 0.0
            return [UserStoppedSpeakingFrame(), CommitTurnFrame()]
        if self._user is None:
            raise RealtimeError("input_audio_buffer_commit_empty", "no speech to commit")
        return [CommitTurnFrame()]

    def _clear(self) -> list[Frame]:
        frames: list[Frame] = []
        if self.config.turn_detection is None and self._buffer_ms:
            frames.append(UserStoppedSpeakingFrame())
        frames.append(DiscardTurnFrame())
        self._buffer_ms, self._user = 0.0, None
        self.send({"type": "input_audio_buffer.cleared"})
        return frames

    def _create_item(self, event: dict[str, Any]) -> None:
        item_json = event.get("item")
        role, text = message_text(item_json)
        previous = event.get("previous_item_id")
        after: str | None = None
        if previous == "root":
            after = ""
        elif previous is not None:
            after = self._message_of(self._item(previous, "previous_item_id"))
            if after in self._gone:
                raise RealtimeError(
                    "item_not_found", f"item {previous!r} has no place in the conversation"
                )
        given = item_json.get("id") if isinstance(item_json, dict) else None
        item_id = given if isinstance(given, str) and given and given not in self._items else None
        kind = "input_text" if role in ("user", "system") else "output_text"
        item = Item(item_id or new_id("item"), role, kind, transcript=text)
        item.message = new_message_id()
        self._edit(HistoryAddFrame(role=role, text=text, message_id=item.message, after=after))
        self._announce(item, previous if previous is not None else self._last_item)

    def _delete_item(self, item_id: str) -> None:
        item = self._item(item_id, "item_id")
        if item.message is not None:
            self._edit(HistoryRemoveFrame(message_id=item.message))
        del self._items[item_id]
        self.send({"type": "conversation.item.deleted", "item_id": item_id})

    def _truncate_item(self, item_id: str, audio_end_ms: int) -> None:
        item = self._item(item_id, "item_id")
        if item.role != "assistant" or "audio" not in item.kind:
            raise RealtimeError(
                "invalid_value", "only an assistant's audio can be truncated", "item_id"
            )
        if not 0 <= audio_end_ms <= item.audio_ms + 1:
            raise RealtimeError(
                "invalid_value",
                f"audio_end_ms {audio_end_ms} is past the item's {item.audio_ms:.0f} ms of audio",
                "audio_end_ms",
            )
        if self._response is not None and self._response.item is item:
            self._truncate_after = (item_id, audio_end_ms)
            self.link.interrupt("truncated")  # applied once the reply has stopped
            return
        self._apply_truncate(item, audio_end_ms)

    def _apply_truncate(self, item: Item, audio_end_ms: int, *, after_cut: bool = False) -> None:
        """Keep the part of `item` that `audio_end_ms` of its audio says. `after_cut`: its reply
        was just cut, and playback's report of what was heard truncates it first."""
        words = item.transcript.split()
        keep = int(len(words) * min(1.0, audio_end_ms / item.audio_ms)) if item.audio_ms else 0
        item.transcript = " ".join(words[:keep])
        item.audio_ms = float(audio_end_ms)
        if item.message is not None:
            edit = HistoryTruncateFrame(message_id=item.message, heard=item.transcript)
            self._edit(edit, Direction.UPSTREAM if after_cut else Direction.DOWNSTREAM)
        self.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item.id,
                "content_index": 0,
                "audio_end_ms": audio_end_ms,
            }
        )

    def _create_response(self) -> list[Frame]:
        if self._response is not None:
            raise RealtimeError(
                "conversation_already_has_active_response",
                f"response {self._response.id} is still in progress",
            )
        self._response = Response(new_id("resp"))
        self._open_response(self._response)
        return [ResponseRequestFrame()]

    # --- session events --------------------------------------------------------------------

    def on_session_event(self, event: Event) -> None:
        kind, data = event.type, event.data
        if kind == "user_started_speaking":
            self._speech_ms = (int(data.get("audio_ms", 0)), self._speech_ms[1])
        elif kind == "user_stopped_speaking":
            self._speech_ms = (self._speech_ms[0], int(data.get("audio_ms", 0)))
        elif kind in ("turn_started", "turn_reopened") and self.config.turn_detection is not None:
            self._user = Item(new_id("item"), "user", "input_audio")
            self._buffer_event(self._user, "speech_started", audio_start_ms=self._speech_ms[0])
        elif kind == "transcript" and data.get("role") == "user" and not data.get("final"):
            self._user_partial(str(data.get("text", "")))
        elif kind == "user_message":
            self._user_message(int(data.get("turn", 0)), str(data["id"]))
        elif kind == "turn_retracted":
            self._forget_messages(set(data.get("ids", [])))
        elif (
            kind == "history_truncated"
            and data.get("id")
            and not str(data.get("heard", "")).strip()
        ):
            self._gone.add(str(data["id"]))  # a reply nothing of was heard: removed
        elif kind == "end_of_turn":
            self._user_turn_ended(int(data.get("turn", 0)), str(data.get("text", "")))
        elif kind == "turn_discarded":
            self._user = None
        elif kind == "llm_started":
            self._replies.append(Reply())
        elif kind == "reply_text" or (kind == "tts_chunk" and not self.config.spoken):
            self._reply_text(str(data.get("text", "")))  # spoken: as it is heard
        elif kind == "llm_done":
            self._reply_done(data)
        elif kind == "bot_stopped_speaking":
            self._close_response("completed")
        elif kind == "playback_interrupted":  # every reply in the making is dropped too
            self._reply_cut(str(data.get("heard", "")), int(data.get("played_ms", 0)))
            self._replies.clear()
        elif kind == "error":
            self._error(data)

    def on_reply_audio(self, samples: int) -> tuple[str, str]:
        """The reply's audio goes out (`samples` at 24 kHz): its response opens first if it
        has not; the ids (response, item) its delta belongs to."""
        response = self._output_started()
        assert response.item is not None
        response.item.audio_ms += 1000.0 * samples / RATE
        return response.id, response.item.id

    def _buffer_event(self, item: Item, name: str, **data: Any) -> None:
        self.send({"type": f"input_audio_buffer.{name}", "item_id": item.id, **data})

    def _user_partial(self, text: str) -> None:
        """A partial transcript of the turn: what it adds to the last one, as a delta (a
        partial that rewrites earlier words is left to the completed transcript)."""
        user = self._user
        if user is None or not text.startswith(user.transcript) or text == user.transcript:
            return
        delta, user.transcript = text[len(user.transcript) :], text
        self.send(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": user.id,
                "content_index": 0,
                "delta": delta,
            }
        )

    def _user_message(self, turn: int, message: str) -> None:
        """The user's turn `turn` is now `message` of the History."""
        item = self._turn_items.get(turn) or self._user
        if item is not None:
            item.message = message
            self._remember(turn, item)

    def _remember(self, turn: int, item: Item) -> None:
        self._turn_items[turn] = item
        while len(self._turn_items) > 16:
            self._turn_items.popitem(last=False)

    def _user_turn_ended(self, turn: int, text: str) -> None:
        if self._user is None:  # a turn the client discarded
            return
        user, self._user = self._user, None
        self._remember(turn, user)
        if self.config.turn_detection is not None:
            self._buffer_event(user, "speech_stopped", audio_end_ms=self._speech_ms[1])
        user.transcript = text
        self._buffer_event(user, "committed", previous_item_id=self._last_item)
        self._announce(user, self._last_item)
        self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": user.id,
                "content_index": 0,
                "transcript": text,
            }
        )

    def _forget_messages(self, ids: set[str]) -> None:
        for item in list(self._items.values()):
            if item.message in ids:
                del self._items[item.id]
                self.send({"type": "conversation.item.deleted", "item_id": item.id})
        if self._user is not None and self._user.message in ids:
            self._user.message = None

    def _reply_text(self, text: str) -> None:
        reply = self._output_started().reply
        assert reply is not None
        reply.texts.append(text)
        self._send_texts()

    def _send_texts(self) -> None:
        """The response's text not yet sent, as deltas."""
        response = self._response
        if response is None or response.item is None or response.reply is None:
            return
        reply = response.reply
        name = "audio_transcript" if "audio" in response.item.kind else "text"
        for text in reply.texts[reply.sent :]:
            self._delta(f"response.output_{name}.delta", response, text)
        reply.sent = len(reply.texts)
        response.item.transcript = reply.text

    def _reply_cut(self, heard: str, played_ms: int) -> None:
        """A barge-in or a cancel stopped the reply: its item keeps what was heard."""
        response = self._response
        if response is None:
            return
        if response.item is not None:
            response.reply = Reply([heard]) if heard else Reply()
            response.item.transcript = heard
            response.item.audio_ms = float(played_ms)
            self.send(
                {
                    "type": "conversation.item.truncated",
                    "item_id": response.item.id,
                    "content_index": 0,
                    "audio_end_ms": played_ms,
                }
            )
        self._close_response("cancelled", "turn_detected")

    def _reply_done(self, data: dict[str, Any]) -> None:
        if not self._replies:
            return
        reply = self._replies[-1]
        reply.message = data.get("id")
        response = self._response
        if response is not None and response.item is not None and response.reply is reply:
            response.item.message = reply.message
        if self.config.spoken and str(data.get("text", "")).strip():
            return  # the response ends when its audio has played
        if response is not None and response.reply in (reply, None):
            self._close_response("completed")  # nothing will be played: it is over
        elif reply in self._replies:
            self._replies.remove(reply)  # an empty reply: no response is made of it

    def _error(self, data: dict[str, Any]) -> None:
        self.send(
            {
                "type": "error",
                "error": {
                    "type": "server_error",
                    "code": str(data.get("code") or "engine_error"),
                    "message": str(data.get("message", "")),
                    "param": None,
                },
            }
        )
        if self._response is not None and self._response.item is None:
            self._close_response("failed", "error")

    # --- responses ---------------------------------------------------------------------------

    def _open_response(self, response: Response) -> None:
        if not response.announced:
            response.announced = True
            self.send({"type": "response.created", "response": response.as_json("in_progress")})

    def _output_started(self) -> Response:
        """The response whose output is going out, opened (and its item added) if need be."""
        if self._response is None:
            self._response = Response(new_id("resp"))
        response = self._response
        self._open_response(response)
        if response.item is None:
            if not self._replies:
                self._replies.append(Reply())
            response.reply = self._replies[0]
            kind = "output_audio" if self.config.spoken else "output_text"
            item = Item(new_id("item"), "assistant", self._beta_kind(kind), status="in_progress")
            item.message = response.reply.message
            response.item = item
            ids = {"response_id": response.id, "output_index": 0}
            self.send({"type": "response.output_item.added", **ids, "item": item.as_json()})
            self._announce(item, self._last_item)
            part = item.as_json()["content"][0]
            self.send(
                {
                    "type": "response.content_part.added",
                    **ids,
                    "item_id": item.id,
                    "content_index": 0,
                    "part": part,
                }
            )
            self._send_texts()
        return response

    def _delta(self, name: str, response: Response, text: str) -> None:
        assert response.item is not None
        self.send(
            {
                "type": name,
                "response_id": response.id,
                "item_id": response.item.id,
                "output_index": 0,
                "content_index": 0,
                "delta": text,
            }
        )

    def _close_response(self, status: str, reason: str | None = None) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        item = response.item
        if response.reply is not None and response.reply in self._replies:
            self._replies.remove(response.reply)
        if item is not None:
            ids = {"response_id": response.id, "item_id": item.id, "output_index": 0}
            part = {**ids, "content_index": 0}
            item.status = "completed" if status == "completed" else "incomplete"
            if "audio" in item.kind:
                self.send({"type": "response.output_audio.done", **part})
                self.send(
                    {
                        "type": "response.output_audio_transcript.done",
                        **part,
                        "transcript": item.transcript,
                    }
                )
            else:
                self.send({"type": "response.output_text.done", **part, "text": item.transcript})
            self.send(
                {"type": "response.content_part.done", **part, "part": item.as_json()["content"][0]}
            )
            self.send(
                {
                    "type": "response.output_item.done",
                    "response_id": response.id,
                    "output_index": 0,
                    "item": item.as_json(),
                }
            )
        if response.announced or item is not None:
            self._open_response(response)
            self.send({"type": "response.done", "response": response.as_json(status, reason)})
        if item is not None and self._truncate_after is not None:
            item_id, end_ms = self._truncate_after
            self._truncate_after = None
            if item_id == item.id:
                self._apply_truncate(item, min(end_ms, round(item.audio_ms)), after_cut=True)

    # --- items and the session object --------------------------------------------------------

    def _edit(self, frame: HistoryEditFrame, direction: Direction = Direction.DOWNSTREAM) -> None:
        """Have the session's History edited. After a cut, the edit goes in at the output end
        (`UPSTREAM`), behind playback's report of what was heard, which truncates the reply:
        the client's edit must not run ahead of that."""
        if isinstance(frame, HistoryTruncateFrame) and not frame.heard.strip():
            self._gone.add(frame.message_id)
        self.link.change(frame, direction)

    def _announce(self, item: Item, previous: str | None) -> None:
        self._items[item.id] = item
        self._last_item = item.id
        self.send(
            {
                "type": "conversation.item.created",
                "previous_item_id": previous,
                "item": item.as_json(),
            }
        )

    def _item(self, item_id: Any, param: str) -> Item:
        item = self._items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise RealtimeError("item_not_found", f"no item {item_id!r} in the conversation", param)
        return item

    def _message_of(self, item: Item) -> str:
        if item.message is None:
            raise RealtimeError("item_not_found", f"item {item.id!r} has no message", "item_id")
        return item.message

    def _beta_kind(self, kind: str) -> str:
        return kind.removeprefix("output_") if self.beta else kind
