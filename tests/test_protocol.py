"""The wire protocol: strict parsing of client messages, and what clients see of a session."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fakes import make_event
from voice_agent.protocol import (
    Bye,
    Offer,
    ProtocolError,
    Start,
    WireEvents,
    parse_client_message,
)


def test_valid_messages_parse() -> None:
    assert parse_client_message('{"type": "offer", "sdp": "v=0"}') == Offer(type="offer", sdp="v=0")
    assert parse_client_message(
        b'{"type": "start", "sample_rate": 24000, "persona": "tutor"}'
    ) == Start(type="start", sample_rate=24000, persona="tutor")
    assert parse_client_message('{"type": "bye"}') == Bye(type="bye")


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "not JSON"),
        ("nope", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"sdp": "x"}', "unknown message type missing"),
        ('{"type": "hello"}', 'unknown message type "hello"'),
        ('{"type": "offer"}', "offer: sdp: Field required"),
        ('{"type": "offer", "sdp": ""}', "offer: sdp"),
        ('{"type": "offer", "sdp": 1}', "offer: sdp: Input should be a valid string"),
        ('{"type": "offer", "sdp": "x", "extra": 1}', "offer: extra: Extra inputs"),
        ('{"type": "start", "sample_rate": "16000"}', "start: sample_rate"),
        ('{"type": "start", "sample_rate": 16000.5}', "start: sample_rate"),
        ('{"type": "start", "sample_rate": 100}', "greater than or equal to 8000"),
        ('{"type": "start", "sample_rate": 96000}', "less than or equal to 48000"),
        ('{"type": "start", "sample_rate": 16000, "persona": "../x"}', "start: persona"),
        ('{"type": "start", "sample_rate": 16000, "persona": "A"}', "start: persona"),
    ],
)
def test_bad_messages_say_what_is_wrong(raw: str | bytes, says: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_client_message(raw)
    assert err.value.code == "bad_message"
    assert says in err.value.message


def test_an_offer_over_the_size_bound_is_refused() -> None:
    with pytest.raises(ProtocolError, match="at most 65536"):
        parse_client_message(json.dumps({"type": "offer", "sdp": "a" * 70_000}))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_or_text_give_a_message_or_a_protocol_error(raw: str | bytes) -> None:
    try:
        parse_client_message(raw)
    except ProtocolError as err:
        assert err.code == "bad_message" and err.message


@given(
    st.dictionaries(
        st.sampled_from(["type", "sdp", "sample_rate", "persona", "x"]), json_values, max_size=5
    ),
    st.sampled_from(["offer", "start", "bye", None]),
)
def test_any_json_object_gives_a_message_or_a_protocol_error(
    data: dict[str, Any], kind: str | None
) -> None:
    if kind is not None:
        data["type"] = kind
    try:
        message = parse_client_message(json.dumps(data))
    except ProtocolError as err:
        assert err.code == "bad_message"
    else:
        assert message.type == kind


class Timeline:
    """Feeds events to a WireEvents at given times (ms) and keeps what it sends."""

    def __init__(self) -> None:
        self.wire = WireEvents()
        self.sent: list[dict[str, Any]] = []

    def at(self, at_ms: float, kind: str, **data: Any) -> list[dict[str, Any]]:
        out = list(self.wire.translate(make_event(kind, at_ms, **data)))
        self.sent += out
        return out


def test_a_turn_as_a_client_sees_it() -> None:
    t = Timeline()
    t.at(0, "turn_started", turn=1)
    assert t.at(0, "user_started_speaking", onset_ms_ago=40) == [
        {"type": "state", "state": "user_speaking"}
    ]
    assert t.at(500, "transcript", role="user", text="what is", final=False) == [
        {"type": "transcript", "role": "user", "text": "what is", "final": False, "turn": 1}
    ]
    assert t.at(1160, "user_stopped_speaking", speech_end_ms_ago=160) == [
        {"type": "state", "state": "listening"}
    ]
    t.at(1200, "transcript", role="user", text="what is the time", final=True)
    assert t.at(1400, "tts_chunk", text="It is") == []  # a preemptive reply, not heard yet
    assert t.at(1500, "end_of_turn", turn=1, reason="finished turn") == [
        {"type": "state", "state": "thinking"}
    ]
    assert t.at(1510, "bot_started_speaking") == [
        {"type": "state", "state": "speaking"},
        {"type": "transcript", "role": "assistant", "text": "It is", "final": False, "turn": 1},
    ]
    [metrics] = t.at(1510, "turn_metrics", turn=1, reason="finished turn", voice_to_voice_ms=510.0)
    assert metrics == {
        "type": "turn_metrics",
        "turn": 1,
        "reason": "finished turn",
        "speech_ms": None,
        "endpoint_ms": None,
        "asr_ms": None,
        "llm_first_token_ms": None,
        "first_clause_ms": None,
        "tts_first_chunk_ms": None,
        "voice_to_voice_ms": 510.0,
    }
    assert t.at(1600, "tts_chunk", text="ten o'clock.") == [
        {
            "type": "transcript",
            "role": "assistant",
            "text": "It is ten o'clock.",
            "final": False,
            "turn": 1,
        }
    ]
    assert t.at(2500, "bot_stopped_speaking") == [
        {
            "type": "transcript",
            "role": "assistant",
            "text": "It is ten o'clock.",
            "final": True,
            "turn": 1,
        },
        {"type": "state", "state": "listening"},
    ]
    for internal, data in [
        ("vad_onset", {}),
        ("llm_first_token", {}),
        ("turn_record", {"session": "s1", "at": 1.0, "turn": 1}),
        ("duck", {"db": 24.0, "why": "speech onset"}),
        ("llm_done", {"text": "x"}),
    ]:
        assert t.at(2600, internal, **data) == []


def test_a_reply_that_starts_while_the_user_speaks_again_is_the_earlier_turns() -> None:
    t = Timeline()
    t.at(0, "turn_started", turn=1)
    t.at(1200, "end_of_turn", turn=1, reason="finished question")
    t.at(3000, "turn_started", turn=2)  # they speak again while the assistant is thinking
    t.at(3100, "tts_chunk", text="Paris.")
    assert t.at(3200, "bot_started_speaking")[-1]["turn"] == 1
    assert t.at(3900, "bot_stopped_speaking")[0] == {
        "type": "transcript",
        "role": "assistant",
        "text": "Paris.",
        "final": True,
        "turn": 1,
    }
    t.at(4500, "end_of_turn", turn=2, reason="finished turn")
    t.at(4600, "tts_chunk", text="Yes.")
    assert t.at(4700, "bot_started_speaking")[-1]["turn"] == 2


def test_a_reply_that_was_never_heard_shows_nothing() -> None:
    t = Timeline()
    t.at(0, "turn_started", turn=1)
    t.at(0, "user_started_speaking")
    t.at(1000, "user_stopped_speaking", speech_end_ms_ago=160)
    t.at(1200, "tts_chunk", text="Sure, I")
    t.at(1300, "preemption_cancelled", turn=1)
    t.at(1300, "user_started_speaking")  # they went on talking
    t.at(1300, "playback_interrupted", heard="", played_ms=0)
    assert [m for m in t.sent if m.get("role") == "assistant" or m["type"] == "interrupted"] == []
    t.at(2200, "tts_chunk", text="Right.")
    t.at(2210, "bot_started_speaking")
    assistant = [m["text"] for m in t.sent if m.get("role") == "assistant"]
    assert assistant == ["Right."]


def test_a_barge_in_shows_what_was_heard() -> None:
    t = Timeline()
    t.at(0, "turn_started", turn=1)
    t.at(0, "user_started_speaking")
    t.at(1000, "user_stopped_speaking", speech_end_ms_ago=160)
    t.at(1100, "tts_chunk", text="Once there was a fox.")
    t.at(1200, "end_of_turn", turn=1, reason="finished turn")
    t.at(1210, "bot_started_speaking")
    t.at(1500, "tts_chunk", text="It ran far away.")
    t.at(2000, "turn_started", turn=2)
    assert t.at(2000, "user_started_speaking") == [{"type": "state", "state": "user_speaking"}]
    assert t.at(
        2300, "playback_interrupted", heard="Once there was a fox. It ran", played_ms=1090
    ) == [
        {
            "type": "interrupted",
            "heard": "Once there was a fox. It ran",
            "played_ms": 1090,
            "turn": 1,
        },
        {
            "type": "transcript",
            "role": "assistant",
            "text": "Once there was a fox. It ran",
            "final": True,
            "turn": 1,
        },
    ]
    assert t.at(2400, "bot_stopped_speaking") == [{"type": "state", "state": "listening"}]


def test_errors_carry_a_code() -> None:
    t = Timeline()
    assert t.at(0, "error", message="llm: boom", source="llm", fatal=False) == [
        {"type": "error", "code": "engine", "message": "llm: boom", "fatal": False}
    ]
    assert t.at(0, "error", message="x", source="transport", fatal=True, code="bad_message") == [
        {"type": "error", "code": "bad_message", "message": "x", "fatal": True}
    ]
    assert t.at(0, "llm_done", text="ignored") == []
