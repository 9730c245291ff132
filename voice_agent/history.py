"""The conversation as the assistant remembers it: only what the user really heard.

An assistant message that was cut off by a barge-in is truncated to the words that were played
(see `PlaybackInterruptedFrame`); one of which nothing was heard is removed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from voice_agent.persona import Persona

Role = Literal["system", "user", "assistant"]


@dataclass(slots=True)
class Message:
    role: Role
    content: str
    interrupted: bool = False

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


def approx_tokens(text: str) -> int:
    """A cheap token estimate (about four characters a token for English)."""
    return len(text) // 4 + 1


class History:
    """User and assistant turns, oldest first."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def add_user(self, text: str) -> None:
        self.messages.append(Message("user", text))

    def add_assistant(self, text: str) -> Message:
        msg = Message("assistant", text)
        self.messages.append(msg)
        return msg

    def truncate(self, msg: Message, heard: str) -> None:
        """Keep only what was heard of an assistant message; remove it if nothing was."""
        if heard.strip():
            msg.content, msg.interrupted = heard.strip(), True
        elif msg in self.messages:
            self.messages.remove(msg)

    def prompt(
        self,
        persona: Persona,
        budget_tokens: int,
        count: Callable[[str], int] = approx_tokens,
    ) -> list[dict[str, str]]:
        """System prompt, few-shot examples, then as much recent history as fits the budget."""
        system = persona.system_prompt.strip()
        if persona.never_say:
            system += "\nNever say: " + "; ".join(persona.never_say) + "."
        head = [{"role": "system", "content": system}]
        for ex in persona.examples:
            head += [
                {"role": "user", "content": ex.user},
                {"role": "assistant", "content": ex.assistant},
            ]
        left = budget_tokens - sum(count(m["content"]) + 4 for m in head)
        tail: list[dict[str, str]] = []
        for msg in reversed(self.messages):
            cost = count(msg.content) + 4
            if cost > left and tail:
                break
            tail.append(msg.as_dict())
            left -= cost
        tail.reverse()
        while tail and tail[0]["role"] == "assistant":
            tail.pop(0)
        return head + tail
