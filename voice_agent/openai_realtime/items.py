"""A Realtime conversation's items (its user, assistant and system messages) and their list.

Item ids are ours (`item_...`); each maps to the message of the session's History it stands
for, so `delete` and `truncate` act on what the LLM will read next: `Items` keeps the items in
order, sends the events that say what became of them, and has the History edited to match.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voice_agent.frames import (
    Direction,
    Frame,
    HistoryAddFrame,
    HistoryEditFrame,
    HistoryRemoveFrame,
    HistoryTruncateFrame,
)
from voice_agent.history import new_message_id
from voice_agent.openai_realtime.schema import RealtimeError, message_text

Send = Callable[[dict[str, Any]], None]
"""Sends one server event to the client."""

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """A new id of ours: `prefix`, then a number no other id has."""
    return f"{prefix}_{next(_ids):06d}"


@dataclass(slots=True)
class Item:
    """One item of the conversation: a message, and what the client knows of it."""

    id: str
    role: str
    kind: str
    """Content type: input_audio, input_text, text, output_audio, output_text."""
    transcript: str = ""
    message: str | None = None
    """The History message it stands for (None: none, or not yet)."""
    audio_ms: float = 0.0
    status: str = "completed"

    def as_json(self) -> dict[str, Any]:
        """The item as the client sees it."""
        key = "transcript" if "audio" in self.kind else "text"
        return {
            "id": self.id,
            "object": "realtime.item",
            "type": "message",
            "status": self.status,
            "role": self.role,
            "content": [{"type": self.kind, key: self.transcript}],
        }


class Items:
    """The conversation's items in order, each tied to its History message."""

    def __init__(self, send: Send, change: Callable[[Frame, Direction], None]) -> None:
        self._send = send
        self._change = change
        self._items: dict[str, Item] = {}
        self.last: str | None = None
        """The id of the item added last (what a new one follows)."""
        self._gone: set[str] = set()
        """History messages that are gone, though items still stand for them (replies cut or
        truncated to nothing): nothing can be placed after them."""

    def add(self, item: Item, previous: str | None) -> None:
        """`item` joins the conversation after the item `previous`; the client is told."""
        self._items[item.id] = item
        self.last = item.id
        self._send(
            {
                "type": "conversation.item.created",
                "previous_item_id": previous,
                "item": item.as_json(),
            }
        )

    def create(self, event: dict[str, Any]) -> None:
        """A client's `conversation.item.create`: a text message added to the History."""
        item_json = event.get("item")
        role, text = message_text(item_json)
        previous = event.get("previous_item_id")
        after: str | None = None
        if previous == "root":
            after = ""
        elif previous is not None:
            after = self._message_of(self.get(previous, "previous_item_id"))
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
        self.add(item, previous if previous is not None else self.last)

    def delete(self, item_id: str) -> None:
        """A client's `conversation.item.delete`: the item and its History message go."""
        item = self.get(item_id, "item_id")
        if item.message is not None:
            self._edit(HistoryRemoveFrame(message_id=item.message))
        del self._items[item_id]
        self._send({"type": "conversation.item.deleted", "item_id": item_id})

    def forget(self, messages: set[str]) -> None:
        """These History messages were retracted: the items that stand for them go."""
        for item in list(self._items.values()):
            if item.message in messages:
                del self._items[item.id]
                self._send({"type": "conversation.item.deleted", "item_id": item.id})

    def message_gone(self, message: str) -> None:
        """The History message `message` was removed (a reply nothing of was heard)."""
        self._gone.add(message)

    def to_truncate(self, item_id: Any, audio_end_ms: int) -> Item:
        """The item a client's `conversation.item.truncate` names, if it can be truncated
        there; `RealtimeError` if not."""
        item = self.get(item_id, "item_id")
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
        return item

    def truncate(self, item: Item, audio_end_ms: int, *, after_cut: bool = False) -> None:
        """Keep the part of `item` that `audio_end_ms` of its audio says. `after_cut`: its reply
        was just cut, and playback's report of what was heard truncates it first."""
        words = item.transcript.split()
        keep = int(len(words) * min(1.0, audio_end_ms / item.audio_ms)) if item.audio_ms else 0
        item.transcript = " ".join(words[:keep])
        item.audio_ms = float(audio_end_ms)
        if item.message is not None:
            edit = HistoryTruncateFrame(message_id=item.message, heard=item.transcript)
            self._edit(edit, Direction.UPSTREAM if after_cut else Direction.DOWNSTREAM)
        self.truncated(item.id, audio_end_ms)

    def truncated(self, item_id: str, audio_end_ms: int) -> None:
        """Tell the client that the item keeps only its first `audio_end_ms` of audio."""
        self._send(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": audio_end_ms,
            }
        )

    def get(self, item_id: Any, param: str) -> Item:
        """The item `item_id` (`param` names the field of the client's event that gave it);
        `RealtimeError` if there is none."""
        item = self._items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise RealtimeError("item_not_found", f"no item {item_id!r} in the conversation", param)
        return item

    def _message_of(self, item: Item) -> str:
        if item.message is None:
            raise RealtimeError("item_not_found", f"item {item.id!r} has no message", "item_id")
        return item.message

    def _edit(self, frame: HistoryEditFrame, direction: Direction = Direction.DOWNSTREAM) -> None:
        """Have the session's History edited. After a cut, the edit goes in at the output end
        (`UPSTREAM`), behind playback's report of what was heard, which truncates the reply:
        the client's edit must not run ahead of that."""
        if isinstance(frame, HistoryTruncateFrame) and not frame.heard.strip():
            self._gone.add(frame.message_id)
        self._change(frame, direction)
