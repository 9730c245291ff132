"""The records of a Realtime conversation: items (user and assistant messages) and responses."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}"


@dataclass(slots=True)
class Item:
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
        key = "transcript" if "audio" in self.kind else "text"
        return {
            "id": self.id,
            "object": "realtime.item",
            "type": "message",
            "status": self.status,
            "role": self.role,
            "content": [{"type": self.kind, key: self.transcript}],
        }


@dataclass(slots=True)
class Reply:
    """A reply the pipeline is making (the LLM has started it): what it says so far."""

    texts: list[str] = field(default_factory=list)
    sent: int = 0
    """Texts already sent to the client (as transcript or text deltas)."""
    message: str | None = None
    """Its History message, once the LLM is done with it."""

    @property
    def text(self) -> str:
        return " ".join(t.strip() for t in self.texts if t.strip())


@dataclass(slots=True)
class Response:
    id: str
    item: Item | None = None
    announced: bool = False
    reply: Reply | None = None

    def as_json(self, status: str, reason: str | None = None) -> dict[str, Any]:
        details = None if reason is None else {"type": status, "reason": reason}
        return {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": [] if self.item is None else [self.item.as_json()],
            "usage": None,
        }
