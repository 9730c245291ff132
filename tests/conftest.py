"""Real engines, loaded once per test run (tests that use them are marked `slow`)."""

from __future__ import annotations

import pytest

from voice_agent.backbone.base import ASREngine, TTSEngine
from voice_agent.config import Settings
from voice_agent.modelfiles import ModelStore


@pytest.fixture(scope="session")
def app_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def store(app_settings: Settings) -> ModelStore:
    return ModelStore(cache_dir=app_settings.engines.models_cache, progress=None)


@pytest.fixture(scope="session")
def piper(app_settings: Settings, store: ModelStore) -> TTSEngine:
    from voice_agent.backbone.factory import load_tts

    return load_tts("piper", app_settings.engines.tts, store)


@pytest.fixture(scope="session")
def asr(app_settings: Settings, store: ModelStore) -> ASREngine:
    from voice_agent.backbone.factory import load_asr

    return load_asr(app_settings.engines.asr, store)
