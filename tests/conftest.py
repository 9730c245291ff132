"""Real engines, loaded once per test run (tests that use them are marked `slow`), and servers
with fake engines."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.servers import MakeServer, fake_engines, make_settings
from voice_agent.backbone.base import ASREngine, TTSEngine
from voice_agent.config import Settings
from voice_agent.engines import Engines
from voice_agent.modelfiles import ModelStore
from voice_agent.server import Server


@pytest.fixture(scope="session")
def app_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def store(app_settings: Settings) -> ModelStore:
    return ModelStore(cache_dir=app_settings.engines.models_cache, progress=None)


@pytest.fixture(scope="session")
def piper(app_settings: Settings, store: ModelStore) -> TTSEngine:
    from voice_agent.engines import load_tts

    return load_tts("piper", app_settings.engines.tts, store)


@pytest.fixture(scope="session")
def asr(app_settings: Settings, store: ModelStore) -> ASREngine:
    from voice_agent.engines import load_asr

    return load_asr(app_settings.engines.asr, store)


@pytest.fixture
async def make_server(store: ModelStore) -> AsyncIterator[MakeServer]:
    """Servers on loopback (port 0), with fake engines unless given; stopped after the test."""
    servers: list[Server] = []

    async def make(
        engines: Engines | None = None, metrics: dict[str, Any] | None = None, **server: Any
    ) -> Server:
        settings = make_settings(metrics, **server)
        s = Server(settings, engines or fake_engines(store, settings))
        await s.start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        await s.stop(0)
        s.engines.executor.shutdown()


@pytest.fixture(scope="session")
def real_engines() -> Iterator[Engines]:
    """The real models, loaded once for every slow test that serves them (Piper speaks)."""
    from voice_agent.engines import load_engines

    engines = load_engines(make_settings(), tts=("piper",))
    yield engines
    engines.close()
