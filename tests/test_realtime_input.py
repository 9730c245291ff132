"""The user's side of a Realtime conversation alone (`UserInput` over an item list): what the
conversation's own tests do not reach of it."""

from __future__ import annotations

from typing import Any

from tests.fakes import FakeTTS, persona
from voice_agent.config import Settings
from voice_agent.frames import Direction, Frame, HistoryRemoveFrame, UserStartedSpeakingFrame
from voice_agent.openai_realtime.config import RealtimeConfig, SessionLink
from voice_agent.openai_realtime.input import TURNS_KEPT, UserInput
from voice_agent.openai_realtime.items import Items
from voice_agent.openai_realtime.schema import RATE
from voice_agent.persona import PersonaStore


class Input:
    """A user input with its item list, what they sent the client and the edits they made."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.changes: list[tuple[Frame, Direction]] = []
        tts = FakeTTS()
        link = SessionLink(
            "s1",
            Settings(),
            persona(),
            {"piper": tts},
            lambda p: tts,
            lambda frame, direction: self.changes.append((frame, direction)),
            lambda reason: None,
        )
        self.config = RealtimeConfig(link, PersonaStore(), model="m", beta=False)
        self.items = Items(self.sent.append, link.change)
        self.input = UserInput(self.config, self.items, self.sent.append, max_buffer_ms=60_000)

    def turn(self, turn: int, text: str) -> str:
        """A turn taken with the server's VAD, its message not yet known; its item id."""
        self.input.turn_started()
        self.input.turn_ended(turn, text)
        return str(self.sent[-1]["item_id"])

    def kinds(self) -> list[str]:
        return [e["type"] for e in self.sent]


def test_a_turns_message_known_after_it_ended_goes_to_its_item() -> None:
    u = Input()
    first = u.turn(1, "hello")
    u.turn(2, "and then")
    u.input.turn_message(1, "msg_1")
    u.items.delete(first)
    ((removed, _),) = u.changes
    assert isinstance(removed, HistoryRemoveFrame) and removed.message_id == "msg_1"


def test_only_the_last_turns_are_known_by_their_ids() -> None:
    u = Input()
    first = u.turn(1, "one")
    last = [u.turn(turn, "more") for turn in range(2, TURNS_KEPT + 2)][-1]
    u.input.turn_message(1, "msg_1")  # too old: no item takes it
    u.items.delete(first)
    assert u.changes == []
    u.input.turn_message(TURNS_KEPT + 1, "msg_last")
    u.items.delete(last)
    ((removed, _),) = u.changes
    assert isinstance(removed, HistoryRemoveFrame) and removed.message_id == "msg_last"


def test_a_retracted_message_leaves_the_turn_being_taken() -> None:
    u = Input()
    u.input.turn_started()
    u.input.turn_message(1, "msg_u")
    u.input.forget({"msg_u"})
    u.input.turn_ended(1, "what is")
    u.items.delete(u.sent[-1]["item_id"])
    assert u.changes == []  # its item stands for no message: there is nothing to remove


def test_the_clients_stretch_is_the_turns_one_item() -> None:
    u = Input()
    u.config.turn_detection = None
    assert [type(f) for f in u.input.on_audio(RATE // 10)] == [UserStartedSpeakingFrame]
    u.input.speech_started(0)
    u.input.turn_started()  # the turn the client opened: no item of the server's VAD
    assert u.sent == []
    u.input.turn_ended(1, "hello")
    assert u.kinds() == [
        "input_audio_buffer.committed",
        "conversation.item.created",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert len({e.get("item_id", e.get("item", {}).get("id")) for e in u.sent}) == 1


def test_speech_bounds_are_the_last_the_vad_heard() -> None:
    u = Input()
    u.input.speech_started(100)
    u.input.speech_stopped(300)  # a backchannel
    u.input.speech_started(900)
    u.input.turn_started()
    u.input.speech_stopped(2000)
    u.input.turn_ended(1, "so")
    started, stopped = (e for e in u.sent if e["type"].startswith("input_audio_buffer.speech"))
    assert (started["audio_start_ms"], stopped["audio_end_ms"]) == (900, 2000)
