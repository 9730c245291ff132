"""transcribe / speak as the CLI drives them, with fakes (the real engines: test_roundtrip.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fakes import FakeASR, FakeTTS
from voice_agent.modes import parse_voice, speak, transcribe
from voice_agent.persona import Voice


def test_transcribe_feeds_audio_like_a_session_and_collects_partials() -> None:
    asr = FakeASR(["hello world"])
    seen: list[str] = []
    result = transcribe(
        asr, np.zeros(16000 * 2, np.int16), partial_interval_ms=400, on_partial=seen.append
    )
    assert result.text == "hello world" and result.audio_s == 2.0
    assert seen == result.partials == [f"heard {ms} ms" for ms in (400, 800, 1200, 1600, 2000)]
    assert asr.utterances == [32000]
    assert transcribe(FakeASR(["x"]), np.zeros(1600, np.int16)).partials == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("joe", Voice(id="joe", speed=1.2)),
        ("piper:joe", Voice(id="joe", speed=1.2)),
        ("kokoro:jf_alpha", Voice(engine="kokoro", id="jf_alpha", speed=1.2)),
        (
            "kokoro:jm_kumo=0.7,jf_alpha=0.3",
            Voice.model_validate(
                {
                    "engine": "kokoro",
                    "speed": 1.2,
                    "blend": [{"id": "jm_kumo", "weight": 0.7}, {"id": "jf_alpha", "weight": 0.3}],
                }
            ),
        ),
    ],
)
def test_voice_specs(spec: str, expected: Voice) -> None:
    assert parse_voice(spec, 1.2) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nobody", "unknown voice 'nobody' for engine piper"),
        ("espeak:joe", "--voice 'espeak:joe'"),
        ("kokoro:jm_kumo=heavy,jf_alpha=0.3", "--voice"),
        ("piper:joe=0.5,joe=0.5", "cannot blend"),
    ],
)
def test_bad_voice_specs_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_voice(spec)


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "🙂🙂", "**  **"])
def test_nothing_to_say_is_a_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="nothing to say"):
        speak(FakeTTS(), text, Voice(id="joe"))


def test_speak_normalises_text_before_synthesis() -> None:
    tts = FakeTTS()
    pcm = speak(tts, "**Hello** there, I have 3 cats 🙂", Voice(id="joe"))
    assert tts.spoken == ["Hello there, I have three cats"]
    assert len(pcm) == 6 * 1600
