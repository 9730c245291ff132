"""The Realtime API's parsers: whatever a client sends, an event or a `RealtimeError`."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.test_protocol import json_values
from voice_agent.openai_realtime.schema import (
    CLIENT_EVENTS,
    RealtimeError,
    audio_of,
    message_text,
    parse_client_event,
    session_changes,
)


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_bytes_or_text_give_an_event_or_a_realtime_error(raw: str | bytes) -> None:
    try:
        event = parse_client_event(raw)
    except RealtimeError as err:
        assert err.code and err.message
    else:
        assert event["type"] in CLIENT_EVENTS


session_keys = st.sampled_from(
    [
        "instructions",
        "voice",
        "turn_detection",
        "audio",
        "input",
        "output",
        "format",
        "type",
        "rate",
        "threshold",
        "silence_duration_ms",
        "create_response",
        "output_modalities",
        "modalities",
        "input_audio_format",
    ]
)
nested = st.recursive(
    json_values, lambda inner: st.dictionaries(session_keys, inner, max_size=5), max_leaves=20
)


@given(nested)
def test_any_session_update_gives_changes_or_a_realtime_error(session: Any) -> None:
    try:
        changes = session_changes({"type": "session.update", "session": session})
    except RealtimeError as err:
        assert err.code in ("invalid_value", "unsupported_format") and err.message
    else:
        assert changes.instructions is None or isinstance(changes.instructions, str)
        assert changes.voice is None or isinstance(changes.voice, str)
        assert changes.modalities is None or set(changes.modalities) <= {"audio", "text"}


@given(st.text(max_size=100) | st.binary(max_size=100).map(lambda b: base64.b64encode(b).decode()))
def test_any_audio_gives_whole_samples_or_a_realtime_error(text: str) -> None:
    try:
        pcm = audio_of({"type": "input_audio_buffer.append", "audio": text}, 64)
    except RealtimeError as err:
        assert err.code in ("invalid_audio", "audio_too_large", "invalid_value")
    else:
        assert len(pcm) % 2 == 0 and len(pcm) <= 64


@given(nested)
def test_any_item_gives_a_text_message_or_a_realtime_error(item: Any) -> None:
    try:
        role, text = message_text(item)
    except RealtimeError as err:
        assert err.message
    else:
        assert role in ("user", "assistant", "system") and isinstance(text, str)


def test_an_append_over_the_bound_is_refused_before_decoding() -> None:
    big = base64.b64encode(bytes(1000)).decode()
    with pytest.raises(RealtimeError, match="at most 64 bytes"):
        audio_of({"type": "input_audio_buffer.append", "audio": big}, 64)


def test_the_beta_session_shape_is_read_too() -> None:
    changes = session_changes(
        json.loads(
            '{"type": "session.update", "session": {"voice": "joe", "modalities": ["text", '
            '"audio"], "input_audio_format": "pcm16", "turn_detection": null}}'
        )
    )
    assert changes.voice == "joe" and changes.modalities == ("text", "audio")
    assert changes.sets_turn_detection and changes.turn_detection is None
