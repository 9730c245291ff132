"""The assistant's side of a Realtime conversation: the pipeline's replies as responses.

A reply is a response, opened when its first audio (or text) goes out, so a preemptive reply
that the user's next words cancel never shows; `response.done` says `completed`, or `cancelled`
after a barge-in or `response.cancel` (then the item keeps only what was heard, and
`conversation.item.truncated` says how much). `response.create` opens one at once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from voice_agent.frames import Frame, ResponseRequestFrame
from voice_agent.openai_realtime.config import RealtimeConfig, SessionLink
from voice_agent.openai_realtime.items import Item, Items, Send, new_id
from voice_agent.openai_realtime.schema import RATE, RealtimeError


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
        """What it says so far, its texts joined."""
        return " ".join(t.strip() for t in self.texts if t.strip())


@dataclass(slots=True)
class Response:
    """A response: a reply the client sees, with its output item once it has output."""

    id: str
    item: Item | None = None
    announced: bool = False
    reply: Reply | None = None

    def as_json(self, status: str, reason: str | None = None) -> dict[str, Any]:
        """The response as the client sees it, with `status` (and the `reason` for it)."""
        details = None if reason is None else {"type": status, "reason": reason}
        return {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": [] if self.item is None else [self.item.as_json()],
            "usage": None,
        }


class Responses:
    """The response in progress (one at a time) and the replies being made for it."""

    def __init__(self, link: SessionLink, config: RealtimeConfig, items: Items, send: Send) -> None:
        self._link = link
        self._config = config
        self._items = items
        self._send = send
        self._response: Response | None = None
        self._replies: deque[Reply] = deque()
        """Replies being made, oldest first: the first is the response's (or will be, when its
        audio goes out); a later one is made while the first plays (it was not interrupted)."""
        self._truncate_after: tuple[str, int] | None = None

    # --- the client's requests -------------------------------------------------------------

    def create(self) -> list[Frame]:
        """A client's `response.create`: the response opens now; the frame that asks for it."""
        if self._response is not None:
            raise RealtimeError(
                "conversation_already_has_active_response",
                f"response {self._response.id} is still in progress",
            )
        self._response = Response(new_id("resp"))
        self._open(self._response)
        return [ResponseRequestFrame()]

    def cancel(self) -> None:
        """A client's `response.cancel`: the reply is stopped (and the response closed when it
        has stopped)."""
        if self._response is None:
            raise RealtimeError("response_cancel_not_active", "no response is in progress")
        self._link.interrupt("response.cancel")

    def truncate_when_stopped(self, item: Item, audio_end_ms: int) -> bool:
        """If `item` is the output of the response playing now: stop it, and truncate it once it
        has stopped. False if it is not (truncate it at once)."""
        if self._response is None or self._response.item is not item:
            return False
        self._truncate_after = (item.id, audio_end_ms)
        self._link.interrupt("truncated")
        return True

    # --- the pipeline's replies ------------------------------------------------------------

    def reply_started(self) -> None:
        """The LLM has started a reply."""
        self._replies.append(Reply())

    def reply_text(self, text: str) -> None:
        """A piece of the reply's text went out (spoken: as it is heard)."""
        reply = self._output_started().reply
        assert reply is not None
        reply.texts.append(text)
        self._send_texts()

    def reply_audio(self, samples: int) -> tuple[str, str]:
        """The reply's audio goes out (`samples` at 24 kHz): its response opens first if it
        has not; the ids (response, item) its delta belongs to."""
        response = self._output_started()
        assert response.item is not None
        response.item.audio_ms += 1000.0 * samples / RATE
        return response.id, response.item.id

    def reply_done(self, text: str, message: str | None) -> None:
        """The LLM is done with the latest reply: its `text`, its `message` in the history."""
        if not self._replies:
            return
        reply = self._replies[-1]
        reply.message = message
        response = self._response
        if response is not None and response.item is not None and response.reply is reply:
            response.item.message = reply.message
        if self._config.spoken and text.strip():
            return  # the response ends when its audio has played
        if response is not None and response.reply in (reply, None):
            self._close("completed")  # nothing will be played: it is over
        elif reply in self._replies:
            self._replies.remove(reply)  # an empty reply: no response is made of it

    def played(self) -> None:
        """The reply has played to its end: its response is completed."""
        self._close("completed")

    def interrupted(self, heard: str, played_ms: int) -> None:
        """A barge-in or a cancel stopped the reply: its item keeps what was heard, and every
        reply in the making is dropped too."""
        response = self._response
        if response is not None:
            if response.item is not None:
                response.reply = Reply([heard]) if heard else Reply()
                response.item.transcript = heard
                response.item.audio_ms = float(played_ms)
                self._items.truncated(response.item.id, played_ms)
            self._close("cancelled", "turn_detected")
        self._replies.clear()

    def failed(self) -> None:
        """An engine failed: a response that has no output yet fails with it."""
        if self._response is not None and self._response.item is None:
            self._close("failed", "error")

    # --- the response's events -------------------------------------------------------------

    def _open(self, response: Response) -> None:
        if not response.announced:
            response.announced = True
            self._send({"type": "response.created", "response": response.as_json("in_progress")})

    def _output_started(self) -> Response:
        """The response whose output is going out, opened (and its item added) if need be."""
        if self._response is None:
            self._response = Response(new_id("resp"))
        response = self._response
        self._open(response)
        if response.item is None:
            if not self._replies:
                self._replies.append(Reply())
            response.reply = self._replies[0]
            kind = "output_audio" if self._config.spoken else "output_text"
            item = Item(new_id("item"), "assistant", self._beta_kind(kind), status="in_progress")
            item.message = response.reply.message
            response.item = item
            ids = {"response_id": response.id, "output_index": 0}
            self._send({"type": "response.output_item.added", **ids, "item": item.as_json()})
            self._items.add(item, self._items.last)
            part = item.as_json()["content"][0]
            self._send(
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

    def _delta(self, name: str, response: Response, text: str) -> None:
        assert response.item is not None
        self._send(
            {
                "type": name,
                "response_id": response.id,
                "item_id": response.item.id,
                "output_index": 0,
                "content_index": 0,
                "delta": text,
            }
        )

    def _close(self, status: str, reason: str | None = None) -> None:
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
                self._send({"type": "response.output_audio.done", **part})
                self._send(
                    {
                        "type": "response.output_audio_transcript.done",
                        **part,
                        "transcript": item.transcript,
                    }
                )
            else:
                self._send({"type": "response.output_text.done", **part, "text": item.transcript})
            self._send(
                {"type": "response.content_part.done", **part, "part": item.as_json()["content"][0]}
            )
            self._send(
                {
                    "type": "response.output_item.done",
                    "response_id": response.id,
                    "output_index": 0,
                    "item": item.as_json(),
                }
            )
        if response.announced or item is not None:
            self._open(response)
            self._send({"type": "response.done", "response": response.as_json(status, reason)})
        if item is not None and self._truncate_after is not None:
            item_id, end_ms = self._truncate_after
            self._truncate_after = None
            if item_id == item.id:
                self._items.truncate(item, min(end_ms, round(item.audio_ms)), after_cut=True)

    def _beta_kind(self, kind: str) -> str:
        return kind.removeprefix("output_") if self._config.beta else kind
