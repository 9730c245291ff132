"""Engines from settings, as the server will load them."""

from __future__ import annotations

import pytest

from voice_agent.config import Settings
from voice_agent.engines import load_engines, load_tts
from voice_agent.modelfiles import ModelStore
from voice_agent.persona import Persona


@pytest.mark.slow
def test_load_engines_gives_every_engine_and_close_releases_them() -> None:
    engines = load_engines(Settings())
    assert set(engines.tts) == {"piper", "kokoro"}  # both installed by `make test`
    storyteller = Persona.model_validate(
        {
            "id": "s",
            "name": "S",
            "description": "d",
            "system_prompt": "p",
            "voice": {"engine": "kokoro", "id": "jf_alpha"},
        }
    )
    assert engines.tts_for(storyteller) is engines.tts["kokoro"]
    server = engines.llm.server  # type: ignore[attr-defined]  # llama.cpp's server child
    assert server.state == "up" and server.pid is not None
    child = server._proc
    engines.close()
    assert server.state == "stopped" and child.poll() is not None


def test_a_persona_whose_engine_is_not_loaded_names_the_extra() -> None:
    from tests.fakes import FakeASR, FakeLLM, engines

    kokoro = Persona.model_validate(
        {
            "id": "k",
            "name": "K",
            "description": "d",
            "system_prompt": "p",
            "voice": {"engine": "kokoro", "id": "jf_alpha"},
        }
    )
    with pytest.raises(ValueError, match=r"pip install 'voice-agent\[kokoro\]'"):
        engines(FakeASR([]), FakeLLM([])).tts_for(kokoro)


def test_an_unknown_tts_engine_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown TTS engine 'espeak'; known: piper, kokoro"):
        load_tts("espeak", Settings().engines.tts, ModelStore(progress=None))
