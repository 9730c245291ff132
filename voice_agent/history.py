"""The conversation as the assistant remembers it: only what the user really heard.

An assistant message that was cut off by a barge-in is truncated to the words that were played
(see `PlaybackInterruptedFrame`); one of which nothing was heard is removed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from voice_agent.persona import Persona

Role = Literal["system", "user", "assistant"]
_ids = itertools.count(1)


def new_message_id() -> str:
    """A message id no other message of the process has."""
    return f"msg_{next(_ids)}"


@dataclass(slots=True)
class Message:
    role: Role
    content: str
    interrupted: bool = False
    id: str = field(default_factory=new_message_id)
    """Unique in the process: how clients of the realtime API name a conversation item."""

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


MIN_REPLY_TOKENS = 16
"""A prompt that leaves less room than this for the reply is refused."""


def fit_to_context(
    messages: list[dict[str, str]],
    prompt_tokens: Callable[[list[dict[str, str]]], int],
    n_ctx: int,
    max_tokens: int,
    model: str,
) -> tuple[list[dict[str, str]], int]:
    """Drop the oldest messages after the system prompt (never the last one, and never leaving
    an assistant message first) until the prompt leaves `max_tokens` for the reply. Returns the
    messages and their prompt length; RuntimeError if even the system prompt and the last
    message leave less than MIN_REPLY_TOKENS."""
    msgs = list(messages)
    first = 1 if msgs and msgs[0]["role"] == "system" else 0
    while True:
        n = prompt_tokens(msgs)
        if n + max_tokens <= n_ctx or len(msgs) - first <= 1:
            break
        del msgs[first]
        while len(msgs) - first > 1 and msgs[first]["role"] == "assistant":
            del msgs[first]
    if n + MIN_REPLY_TOKENS > n_ctx:
        raise RuntimeError(
            f"prompt of {n} tokens does not fit the {n_ctx}-token context of {model} "
            "(even with only the system prompt and the last message); shorten them or raise n_ctx"
        )
    return msgs, n


def approx_tokens(text: str) -> int:
    """A cheap token estimate (about four characters a token for English)."""
    return len(text) // 4 + 1


def system_prompt(persona: Persona) -> str:
    """The persona's prompt with its manners (what it must never say)."""
    system = persona.system_prompt.strip()
    if persona.never_say:
        system += "\nNever say: " + "; ".join(persona.never_say) + "."
    return system


class History:
    """User and assistant turns, oldest first."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def add(
        self, role: Role, text: str, after: str | None = None, message_id: str | None = None
    ) -> Message:
        """Append a message, or insert it just after the message of id `after` ("" = first);
        KeyError for an unknown id. `message_id`: its id, if one was chosen for it already."""
        msg = Message(role, text) if message_id is None else Message(role, text, id=message_id)
        if after is None:
            self.messages.append(msg)
        else:
            index = 0 if after == "" else self.messages.index(self.find(after)) + 1
            self.messages.insert(index, msg)
        return msg

    def add_user(self, text: str) -> Message:
        return self.add("user", text)

    def add_assistant(self, text: str) -> Message:
        return self.add("assistant", text)

    def find(self, message_id: str) -> Message:
        """The message of that id; KeyError if there is none (any more)."""
        for msg in self.messages:
            if msg.id == message_id:
                return msg
        raise KeyError(message_id)

    def remove(self, message_id: str) -> Message:
        """Forget one message; KeyError if there is no such message."""
        msg = self.find(message_id)
        self.messages.remove(msg)
        return msg

    def retract_from(self, msg: Message) -> list[Message]:
        """Forget `msg` and every message after it (a turn that is being replaced); nothing if
        it is no longer in the history. Returns what was forgotten."""
        for index, m in enumerate(self.messages):
            if m is msg:
                gone = self.messages[index:]
                del self.messages[index:]
                return gone
        return []

    def truncate(self, msg: Message, heard: str) -> None:
        """Keep only what was heard of an assistant message; remove it if nothing was."""
        if heard.strip():
            msg.content, msg.interrupted = heard.strip(), True
        else:  # by identity: an earlier reply with the same words must stay
            self.messages[:] = [m for m in self.messages if m is not msg]

    def prompt(
        self,
        persona: Persona,
        budget_tokens: int,
        count: Callable[[str], int] = approx_tokens,
    ) -> list[dict[str, str]]:
        """System prompt, few-shot examples, then as much recent history as fits the budget
        (from a user message on, unless the whole history fits)."""
        head = [{"role": "system", "content": system_prompt(persona)}]
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
        # A tail cut short starts at a user message (after the examples' last answer); one
        # that holds the whole history keeps what the assistant said first (a greeting: "Shall
        # I tell you a story?" is what the caller's "yes" answers).
        while len(tail) < len(self.messages) and tail and tail[0]["role"] == "assistant":
            tail.pop(0)
        return head + tail
