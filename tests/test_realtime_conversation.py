"""The Realtime conversation's protocol logic alone: client events and session events in, server
events and frames out. No session, no pipeline, no models (the end-to-end checks are in
test_realtime_api.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.fakes import FakeTTS, make_event, persona
from voice_agent.backbone.base import TTSEngine
from voice_agent.backbone.stages import PersonaChangeFrame
from voice_agent.config import Settings
from voice_agent.frames import (
    CommitTurnFrame,
    Direction,
    DiscardTurnFrame,
    Frame,
    HistoryAddFrame,
    HistoryRemoveFrame,
    HistoryTruncateFrame,
    ResponseRequestFrame,
    SpeechDetectionFrame,
    SpokenRepliesFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voice_agent.openai_realtime.config import SessionLink
from voice_agent.openai_realtime.conversation import RealtimeConversation
from voice_agent.openai_realtime.schema import RATE, RealtimeError
from voice_agent.persona import Persona, PersonaStore
from voice_agent.turns import TurnPolicy
from voice_agent.turns.policy import TurnPolicyFrame

DOWN, UP = Direction.DOWNSTREAM, Direction.UPSTREAM
LONG = "one two three four five six seven eight nine ten"


class VoicedTTS(FakeTTS):
    voices = ["amy", "ryan"]


class Conversation:
    """A conversation, with what it sent the client, the changes it made and the
    interruptions it asked for."""

    def __init__(self, *, loaded: bool = True, max_buffer_ms: float = 60_000) -> None:
        self.settings = Settings()
        self.tts = VoicedTTS()
        self.sent: list[dict[str, Any]] = []
        self.changes: list[tuple[Frame, Direction]] = []
        self.interrupts: list[str] = []

        def tts_for(p: Persona) -> TTSEngine:
            if not loaded:
                raise ValueError(f"persona {p.id} speaks with an engine that is not loaded")
            return self.tts

        link = SessionLink(
            "s1",
            self.settings,
            persona(),
            {"piper": self.tts},
            tts_for,
            lambda frame, direction: self.changes.append((frame, direction)),
            self.interrupts.append,
        )
        self.c = RealtimeConversation(
            link, PersonaStore(), self.sent.append, model="m", max_buffer_ms=max_buffer_ms
        )

    def client(self, kind: str, **fields: Any) -> list[Frame]:
        return self.c.on_client_event({"type": kind, **fields})

    def update(self, **session: Any) -> list[Frame]:
        return self.client("session.update", session={"type": "realtime", **session})

    def event(self, kind: str, **data: Any) -> None:
        self.c.on_session_event(make_event(kind, **data))

    def kinds(self) -> list[str]:
        return [e["type"] for e in self.sent]

    def last(self, kind: str) -> dict[str, Any]:
        return [e for e in self.sent if e["type"] == kind][-1]

    def frames(self) -> list[Frame]:
        return [frame for frame, _ in self.changes]

    def error(self, kind: str, **fields: Any) -> RealtimeError:
        with pytest.raises(RealtimeError) as info:
            self.client(kind, **fields)
        return info.value

    def user_turn(self, text: str, turn: int = 1, message: str = "msg_u") -> str:
        """A turn taken with the server's VAD; its item id."""
        self.event("user_started_speaking", audio_ms=120)
        self.event("turn_started", turn=turn)
        self.event("user_message", turn=turn, id=message, text=text)
        self.event("user_stopped_speaking", audio_ms=1500)
        self.event("end_of_turn", turn=turn, reason="finished turn", text=text)
        return str(self.last("conversation.item.input_audio_transcription.completed")["item_id"])

    def spoken_reply(self, text: str, ms: int, message: str = "msg_r") -> str:
        """A reply that has started playing (`ms` of its audio); its item id."""
        self.event("llm_started")
        self.event("reply_text", text=text)
        self.event("llm_done", text=text, id=message)
        _, item_id = self.c.on_reply_audio(RATE * ms // 1000)
        return item_id


def audio(ms: int) -> int:
    return RATE * ms // 1000


# --- session.update --------------------------------------------------------------------------


def test_instructions_change_the_persona_and_session_updated_says_so() -> None:
    c = Conversation()
    c.c.hello()
    assert c.sent[0]["type"] == "session.created"
    assert c.sent[0]["session"]["id"] == "s1"
    assert c.sent[0]["session"]["instructions"] == "Be brief."
    assert c.update(instructions="Answer in one word.") == []
    (change, d1), (policy, d2) = c.changes
    assert isinstance(change, PersonaChangeFrame) and change.tts is c.tts
    assert change.persona.system_prompt == "Answer in one word."
    assert change.persona.style == persona().style  # the rest of the persona stays
    assert isinstance(policy, TurnPolicyFrame)
    assert policy.policy == TurnPolicy.of(c.settings, change.persona)
    assert d1 is d2 is DOWN
    assert c.sent[-1]["type"] == "session.updated"
    assert c.sent[-1]["session"]["instructions"] == "Answer in one word."


def test_a_voice_is_a_persona_or_one_of_the_engines_voices() -> None:
    c = Conversation()
    c.update(audio={"output": {"voice": "ryan"}})
    change = c.frames()[0]
    assert isinstance(change, PersonaChangeFrame)
    assert change.persona.voice.id == "ryan" and change.persona.id == "test"
    c.changes.clear()
    c.update(audio={"output": {"voice": "concierge"}})
    change = c.frames()[0]
    assert isinstance(change, PersonaChangeFrame) and change.persona.id == "concierge"
    assert c.last("session.updated")["session"]["audio"]["output"]["voice"] == "concierge"


def test_a_voice_that_cannot_be_used_changes_nothing() -> None:
    c = Conversation()
    error = c.error("session.update", session={"voice": "nobody"})
    assert (error.code, error.param) == ("invalid_value", "session.audio.output.voice")
    assert "ryan" in error.message  # the engine's voices are named
    unloaded = Conversation(loaded=False)
    error = unloaded.error("session.update", session={"instructions": "Hi."})
    assert (error.code, error.param) == ("invalid_value", "session.audio.output.voice")
    assert c.changes == unloaded.changes == []
    assert "session.updated" not in c.kinds() + unloaded.kinds()
    assert unloaded.c.config.instructions == "Be brief."


def test_turn_detection_off_leaves_the_turns_to_the_client_and_on_takes_them_back() -> None:
    c = Conversation()
    base = TurnPolicy.of(c.settings, persona())
    assert c.update(audio={"input": {"turn_detection": None}}) == []
    detection, policy = c.frames()
    assert isinstance(detection, SpeechDetectionFrame)
    assert (detection.enabled, detection.threshold) == (False, c.settings.vad.confirm_threshold)
    assert isinstance(policy, TurnPolicyFrame)
    assert policy.policy == replace(base, auto_end=False, auto_reply=False, barge_in=False)
    started = c.c.on_audio(audio(100))
    assert [type(f) for f in started] == [UserStartedSpeakingFrame]
    assert c.c.on_audio(audio(100)) == []  # one start per stretch
    c.changes.clear()
    vad = {"type": "server_vad", "threshold": 0.7, "silence_duration_ms": 800}
    frames = c.update(audio={"input": {"turn_detection": {**vad, "create_response": False}}})
    # the client's open stretch ends, and is not a turn
    assert [type(f) for f in frames] == [UserStoppedSpeakingFrame, DiscardTurnFrame]
    detection, policy = c.frames()
    assert isinstance(detection, SpeechDetectionFrame)
    assert (detection.enabled, detection.threshold) == (True, 0.7)
    assert isinstance(policy, TurnPolicyFrame)
    assert policy.policy == replace(
        base, auto_end=True, auto_reply=False, barge_in=True, endpoint_silence_ms=800
    )


def test_text_only_replies_and_turn_changes_outlive_a_change_of_persona() -> None:
    c = Conversation()
    c.update(output_modalities=["text"])
    spoken, policy = c.frames()
    assert isinstance(spoken, SpokenRepliesFrame) and spoken.spoken is False
    assert isinstance(policy, TurnPolicyFrame) and policy.policy.preemptive_reply is False
    c.changes.clear()
    c.update(voice="concierge")
    change, policy = c.frames()
    assert isinstance(change, PersonaChangeFrame) and isinstance(policy, TurnPolicyFrame)
    concierge = TurnPolicy.of(c.settings, change.persona)
    assert policy.policy == replace(concierge, preemptive_reply=False)


# --- the user's turns ------------------------------------------------------------------------


def test_a_turn_taken_with_the_servers_vad() -> None:
    c = Conversation()
    c.event("user_started_speaking", audio_ms=80)
    c.event("user_stopped_speaking", audio_ms=400)  # a backchannel: no turn, nothing said
    assert c.sent == []
    c.event("user_started_speaking", audio_ms=120)
    c.event("turn_started", turn=1)
    c.event("transcript", role="user", text="what is", final=False)
    c.event("transcript", role="user", text="what is the", final=False)
    c.event("transcript", role="user", text="so what", final=False)  # rewrites: no delta
    c.event("user_message", turn=1, id="msg_u", text="what is the capital")
    c.event("user_stopped_speaking", audio_ms=1500)
    c.event("end_of_turn", turn=1, reason="finished turn", text="what is the capital")
    assert c.kinds() == [
        "input_audio_buffer.speech_started",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
        "conversation.item.input_audio_transcription.completed",
    ]
    started, d1, d2, stopped, committed, created, completed = c.sent
    assert started["audio_start_ms"] == 120 and stopped["audio_end_ms"] == 1500
    assert [d1["delta"], d2["delta"]] == ["what is", " the"]
    assert committed["previous_item_id"] is None
    assert created["item"]["role"] == "user"
    assert completed["transcript"] == "what is the capital"
    ids = {e["item_id"] for e in (started, d1, stopped, committed, completed)}
    assert ids == {created["item"]["id"]}
    c.client("conversation.item.delete", item_id=created["item"]["id"])
    (removed,) = c.frames()
    assert isinstance(removed, HistoryRemoveFrame) and removed.message_id == "msg_u"


def test_the_client_marks_its_turns() -> None:
    c = Conversation(max_buffer_ms=1000)
    c.update(turn_detection=None)
    assert c.error("input_audio_buffer.commit").code == "input_audio_buffer_commit_empty"
    assert [type(f) for f in c.c.on_audio(audio(500))] == [UserStartedSpeakingFrame]
    frames = c.client("input_audio_buffer.commit")
    assert [type(f) for f in frames] == [UserStoppedSpeakingFrame, CommitTurnFrame]
    c.event("end_of_turn", turn=1, reason="finished turn", text="hello")
    assert "input_audio_buffer.speech_stopped" not in c.kinds()  # the client stopped it
    assert (
        c.last("input_audio_buffer.committed")["item_id"]
        == c.last("conversation.item.input_audio_transcription.completed")["item_id"]
    )
    c.c.on_audio(audio(500))
    with pytest.raises(RealtimeError) as info:
        c.c.on_audio(audio(600))  # past 1000 ms since the last commit
    assert info.value.code == "input_audio_buffer_full"
    frames = c.client("input_audio_buffer.clear")
    assert [type(f) for f in frames] == [UserStoppedSpeakingFrame, DiscardTurnFrame]
    assert c.kinds()[-1] == "input_audio_buffer.cleared"
    assert [type(f) for f in c.client("input_audio_buffer.clear")] == [DiscardTurnFrame]
    c.event(
        "end_of_turn", turn=2, reason="finished turn", text="forgotten"
    )  # a turn the client discarded
    assert c.last("conversation.item.input_audio_transcription.completed")["transcript"] == (
        "hello"
    )


def test_commit_with_the_servers_vad_needs_speech() -> None:
    c = Conversation()
    assert c.error("input_audio_buffer.commit").code == "input_audio_buffer_commit_empty"
    c.event("turn_started", turn=1)
    assert [type(f) for f in c.client("input_audio_buffer.commit")] == [CommitTurnFrame]


def test_a_retracted_turn_loses_its_item() -> None:
    c = Conversation()
    item_id = c.user_turn("what is", message="msg_u")
    c.event("turn_retracted", turn=1, ids=["msg_u"])
    assert c.last("conversation.item.deleted")["item_id"] == item_id
    assert c.error("conversation.item.delete", item_id=item_id).code == "item_not_found"


# --- responses -------------------------------------------------------------------------------


def test_a_spoken_reply_is_a_response_completed_when_it_has_played() -> None:
    c = Conversation()
    user = c.user_turn("what is the capital")
    c.sent.clear()
    c.event("llm_started")
    c.event("llm_done", text="Paris is the capital.", id="msg_r")
    assert c.sent == []  # nothing goes out before the reply's audio
    response_id, item_id = c.c.on_reply_audio(audio(400))
    c.event("reply_text", text="Paris is")
    c.event("reply_text", text="the capital.")
    c.event("bot_stopped_speaking")
    assert c.kinds() == [
        "response.created",
        "response.output_item.added",
        "conversation.item.created",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    assert c.last("conversation.item.created")["previous_item_id"] == user
    done = c.last("response.done")["response"]
    assert done["id"] == response_id and done["status"] == "completed"
    assert done["output"][0]["id"] == item_id
    assert done["output"][0]["content"][0]["transcript"] == "Paris is the capital."
    assert c.error("response.cancel").code == "response_cancel_not_active"
    c.client("conversation.item.delete", item_id=item_id)
    removed = c.frames()[-1]
    assert isinstance(removed, HistoryRemoveFrame) and removed.message_id == "msg_r"


def test_a_barge_in_cancels_the_response_and_keeps_what_was_heard() -> None:
    c = Conversation()
    c.user_turn("tell me")
    item_id = c.spoken_reply(LONG, 1000)
    c.event("playback_interrupted", heard="one two three", played_ms=300)
    truncated = c.last("conversation.item.truncated")
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 300)
    done = c.last("response.done")["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["output"][0]["content"][0]["transcript"] == "one two three"
    assert c.last("response.output_item.done")["item"]["status"] == "incomplete"
    assert c.changes == []  # the LLM stage truncates the reply itself


def test_response_create_and_cancel() -> None:
    c = Conversation()
    frames = c.client("response.create")
    assert [type(f) for f in frames] == [ResponseRequestFrame]
    assert c.kinds() == ["response.created"]
    assert c.error("response.create").code == "conversation_already_has_active_response"
    assert c.client("response.cancel") == []
    assert c.interrupts == ["response.cancel"]
    c.event("playback_interrupted", heard="", played_ms=0)
    assert c.last("response.done")["response"]["status"] == "cancelled"
    assert "conversation.item.truncated" not in c.kinds()  # it had no item


def test_a_text_only_reply_ends_when_the_llm_is_done() -> None:
    c = Conversation()
    c.update(output_modalities=["text"])
    c.sent.clear()
    c.event("llm_started")
    c.event("tts_chunk", text="Paris is the capital.")
    c.event("llm_done", text="Paris is the capital.", id="msg_r")
    assert c.kinds()[-1] == "response.done"
    assert c.last("response.output_text.delta")["delta"] == "Paris is the capital."
    assert c.last("response.output_text.done")["text"] == "Paris is the capital."
    assert c.last("response.done")["response"]["status"] == "completed"


def test_an_engine_error_fails_the_response_that_has_no_output_yet() -> None:
    c = Conversation()
    c.client("response.create")
    c.event("error", code="busy", message="the server is busy")
    error = c.last("error")["error"]
    assert (error["type"], error["code"]) == ("server_error", "busy")
    done = c.last("response.done")["response"]
    assert done["status"] == "failed" and done["status_details"]["reason"] == "error"


# --- items -----------------------------------------------------------------------------------


def message(role: str, text: str) -> dict[str, Any]:
    kind = "input_text" if role == "user" else "output_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def test_created_items_are_history_edits_in_their_place() -> None:
    c = Conversation()
    assert c.client("conversation.item.create", item=message("user", "first")) == []
    first = c.last("conversation.item.created")
    c.client("conversation.item.create", item=message("user", "top"), previous_item_id="root")
    c.client(
        "conversation.item.create",
        item=message("assistant", "second"),
        previous_item_id=first["item"]["id"],
    )
    adds = c.frames()
    assert all(isinstance(f, HistoryAddFrame) for f in adds)
    assert [d for _, d in c.changes] == [DOWN] * 3
    a, b, d = (f for f in adds if isinstance(f, HistoryAddFrame))
    assert [(f.role, f.text, f.after) for f in (a, b, d)] == [
        ("user", "first", None),
        ("user", "top", ""),
        ("assistant", "second", a.message_id),
    ]
    assert len({a.message_id, b.message_id, d.message_id}) == 3
    created = [e for e in c.sent if e["type"] == "conversation.item.created"]
    assert [e["previous_item_id"] for e in created] == [None, "root", first["item"]["id"]]
    error = c.error("conversation.item.create", item=message("user", "x"), previous_item_id="no")
    assert (error.code, error.param) == ("item_not_found", "previous_item_id")
    c.client("conversation.item.delete", item_id=first["item"]["id"])
    removed = c.frames()[-1]
    assert isinstance(removed, HistoryRemoveFrame) and removed.message_id == a.message_id
    assert c.last("conversation.item.deleted")["item_id"] == first["item"]["id"]
    assert c.error("conversation.item.delete", item_id="item_nope").code == "item_not_found"


def test_nothing_can_follow_a_reply_cut_to_nothing() -> None:
    c = Conversation()
    item_id = c.spoken_reply(LONG, 1000, message="msg_r")
    c.event("playback_interrupted", heard="", played_ms=0)
    c.event("history_truncated", id="msg_r", heard="", played_ms=0)
    error = c.error("conversation.item.create", item=message("user", "x"), previous_item_id=item_id)
    assert "no place" in error.message
    other = c.spoken_reply(LONG, 1000, message="msg_r2")
    c.event("bot_stopped_speaking")
    c.client("conversation.item.truncate", item_id=other, content_index=0, audio_end_ms=0)
    error = c.error("conversation.item.create", item=message("user", "x"), previous_item_id=other)
    assert error.code == "item_not_found" and "no place" in error.message


def test_a_finished_reply_is_truncated_at_once() -> None:
    c = Conversation()
    user = c.user_turn("count")
    item_id = c.spoken_reply(LONG, 1000, message="msg_r")
    c.event("bot_stopped_speaking")
    error = c.error("conversation.item.truncate", item_id=item_id, audio_end_ms=5000)
    assert (error.code, error.param) == ("invalid_value", "audio_end_ms")
    error = c.error("conversation.item.truncate", item_id=user, audio_end_ms=0)
    assert (error.code, error.param) == ("invalid_value", "item_id")
    c.client("conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=500)
    ((frame, direction),) = c.changes
    assert isinstance(frame, HistoryTruncateFrame)
    assert (frame.message_id, frame.heard) == ("msg_r", "one two three four five")  # 5 of 10
    assert direction is DOWN
    assert c.last("conversation.item.truncated")["audio_end_ms"] == 500
    assert c.interrupts == []


def test_the_playing_reply_is_truncated_once_it_has_stopped() -> None:
    c = Conversation()
    item_id = c.spoken_reply(LONG, 1000, message="msg_r")
    c.client("conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=300)
    assert c.interrupts == ["truncated"]
    assert c.changes == [] and "conversation.item.truncated" not in c.kinds()
    c.event("playback_interrupted", heard="one two three four", played_ms=400)
    cut, done, truncated = (
        e for e in c.sent if e["type"] in ("conversation.item.truncated", "response.done")
    )
    assert (cut["type"], cut["audio_end_ms"]) == ("conversation.item.truncated", 400)
    assert done["response"]["status"] == "cancelled"
    assert (truncated["type"], truncated["audio_end_ms"]) == ("conversation.item.truncated", 300)
    ((frame, direction),) = c.changes
    assert isinstance(frame, HistoryTruncateFrame)
    assert (frame.message_id, frame.heard) == ("msg_r", "one two three")  # 3/4 of what was heard
    assert direction is UP  # behind playback's report of what was heard


def test_an_unknown_event_is_an_error() -> None:
    c = Conversation()
    error = c.error("response.teleport")
    assert (error.code, error.param) == ("unknown_event", "type")
