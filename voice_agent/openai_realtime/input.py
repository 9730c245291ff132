"""The user's side of a Realtime conversation: the input audio buffer and the user's turns.

A user turn is an item: `speech_started` when the turn opens (never for a backchannel that does
not interrupt), `speech_stopped`, `committed`, `conversation.item.created` and the
transcription's `completed` when it ends. With `turn_detection` off, the client marks its turns:
the audio it appends from one commit (or clear) to the next is the turn.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from voice_agent.frames import (
    CommitTurnFrame,
    DiscardTurnFrame,
    Frame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voice_agent.openai_realtime.config import RealtimeConfig
from voice_agent.openai_realtime.items import Item, Items, Send, new_id
from voice_agent.openai_realtime.schema import RATE, RealtimeError

TURNS_KEPT = 16
"""How many of the last user turns keep their items known by turn id."""


class UserInput:
    """The input audio buffer, the speech the VAD heard in it, and the user's turn items."""

    def __init__(
        self, config: RealtimeConfig, items: Items, send: Send, *, max_buffer_ms: float
    ) -> None:
        self._config = config
        self._items = items
        self._send = send
        self._max_buffer_ms = max_buffer_ms
        self._speech_ms = (0, 0)
        """Where the last speech the VAD heard began and ended, in ms of the input audio."""
        self._buffer_ms = 0.0
        """Audio appended since the last commit or clear, when the client marks its turns."""
        self._user: Item | None = None
        """The user's turn being taken (an item not yet committed)."""
        self._turn_items: OrderedDict[int, Item] = OrderedDict()
        """User items by the turn ids the pipeline gave them (the last few)."""

    # --- the client's audio and requests ---------------------------------------------------

    def on_audio(self, samples: int) -> list[Frame]:
        """`samples` of audio (at 24 kHz) were appended; frames to send before that audio."""
        ms = 1000.0 * samples / RATE
        if self._config.turn_detection is not None:
            return []
        if self._buffer_ms + ms > self._max_buffer_ms:
            raise RealtimeError(
                "input_audio_buffer_full",
                f"the input audio buffer holds at most {self._max_buffer_ms / 1000:.0f} s: "
                "commit or clear it (this audio was dropped)",
            )
        first = self._buffer_ms == 0
        self._buffer_ms += ms
        if first:
            self._user = Item(new_id("item"), "user", "input_audio")
            return [UserStartedSpeakingFrame()]
        return []

    def detection_on(self) -> list[Frame]:
        """`turn_detection` was just turned on: the stretch the client was marking ends,
        discarded; the frames that say so."""
        if not self._buffer_ms:
            return []
        self._buffer_ms, self._user = 0.0, None
        return [UserStoppedSpeakingFrame(), DiscardTurnFrame()]

    def commit(self) -> list[Frame]:
        """A client's `input_audio_buffer.commit`: the frames that end the turn now."""
        if self._config.turn_detection is None:
            if not self._buffer_ms:
                raise RealtimeError(
                    "input_audio_buffer_commit_empty", "the input audio buffer is empty"
                )
            self._buffer_ms = 0.0
            return [UserStoppedSpeakingFrame(), CommitTurnFrame()]
        if self._user is None:
            raise RealtimeError("input_audio_buffer_commit_empty", "no speech to commit")
        return [CommitTurnFrame()]

    def clear(self) -> list[Frame]:
        """A client's `input_audio_buffer.clear`: the frames that discard the turn."""
        frames: list[Frame] = []
        if self._config.turn_detection is None and self._buffer_ms:
            frames.append(UserStoppedSpeakingFrame())
        frames.append(DiscardTurnFrame())
        self._buffer_ms, self._user = 0.0, None
        self._send({"type": "input_audio_buffer.cleared"})
        return frames

    # --- the session's turns ---------------------------------------------------------------

    def speech_started(self, audio_ms: int) -> None:
        """The VAD heard speech begin `audio_ms` into the input audio."""
        self._speech_ms = (audio_ms, self._speech_ms[1])

    def speech_stopped(self, audio_ms: int) -> None:
        """The VAD heard speech end `audio_ms` into the input audio."""
        self._speech_ms = (self._speech_ms[0], audio_ms)

    def turn_started(self) -> None:
        """The turn engine opened (or reopened) a user turn: with the server's VAD, an item."""
        if self._config.turn_detection is not None:
            self._user = Item(new_id("item"), "user", "input_audio")
            self._buffer_event(self._user, "speech_started", audio_start_ms=self._speech_ms[0])

    def partial(self, text: str) -> None:
        """A partial transcript of the turn: what it adds to the last one, as a delta (a
        partial that rewrites earlier words is left to the completed transcript)."""
        user = self._user
        if user is None or not text.startswith(user.transcript) or text == user.transcript:
            return
        delta, user.transcript = text[len(user.transcript) :], text
        self._send(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": user.id,
                "content_index": 0,
                "delta": delta,
            }
        )

    def turn_message(self, turn: int, message: str) -> None:
        """The user's turn `turn` is now `message` of the History."""
        item = self._turn_items.get(turn) or self._user
        if item is not None:
            item.message = message
            self._remember(turn, item)

    def turn_ended(self, turn: int, text: str) -> None:
        """The user's turn `turn` ended, saying `text`: its item is committed and added."""
        if self._user is None:  # a turn the client discarded
            return
        user, self._user = self._user, None
        self._remember(turn, user)
        if self._config.turn_detection is not None:
            self._buffer_event(user, "speech_stopped", audio_end_ms=self._speech_ms[1])
        user.transcript = text
        self._buffer_event(user, "committed", previous_item_id=self._items.last)
        self._items.add(user, self._items.last)
        self._send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": user.id,
                "content_index": 0,
                "transcript": text,
            }
        )

    def turn_discarded(self) -> None:
        """The turn being taken was discarded."""
        self._user = None

    def forget(self, messages: set[str]) -> None:
        """These History messages were retracted: the turn being taken no longer stands for
        one of them."""
        if self._user is not None and self._user.message in messages:
            self._user.message = None

    def _remember(self, turn: int, item: Item) -> None:
        self._turn_items[turn] = item
        while len(self._turn_items) > TURNS_KEPT:
            self._turn_items.popitem(last=False)

    def _buffer_event(self, item: Item, name: str, **data: Any) -> None:
        self._send({"type": f"input_audio_buffer.{name}", "item_id": item.id, **data})
