"""A server on loopback with fake engines (and the real VAD), for fast tests of the server and of
what talks to it."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.fakes import FakeASR, FakeLLM, FakeTTS
from voice_agent.audio.vad import vad_factory
from voice_agent.config import Settings
from voice_agent.engines import Engines
from voice_agent.executor import EngineExecutor
from voice_agent.modelfiles import ModelStore
from voice_agent.server import Server

MakeServer = Callable[..., Awaitable[Server]]


def make_settings(metrics: dict[str, Any] | None = None, **server: Any) -> Settings:
    return Settings.model_validate(
        {
            "server": {"port": 0, "max_sessions": 16, **server},
            "personas": {"dirs": []},
            "turns": {"smart_turn": False},
            "metrics": metrics or {},
        }
    )


def fake_engines(
    store: ModelStore,
    settings: Settings,
    replies: int = 100,
    reply: str = "Paris is the capital.",
    *,
    speaks: bool = True,
) -> Engines:
    """Whatever is said is "what is the capital of france", the answer is `reply`; with
    `speaks` False, no LLM and no TTS (a remote realtime backbone does both)."""
    return Engines(
        asr=FakeASR(["what is the capital of france"] * replies),
        llm=FakeLLM([reply], repeat_last=True) if speaks else None,
        tts={"piper": FakeTTS()} if speaks else {},
        executor=EngineExecutor(workers=2),
        vad=vad_factory(settings.vad, store),
    )


def ws_url(server: Server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


async def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    def get() -> tuple[int, str, bytes]:
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), e.read()

    return await asyncio.to_thread(get)


def free_port() -> int:
    """A loopback TCP port nothing listens on (for a server started after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def console_script() -> str:
    """The `voice-agent` command installed next to this Python."""
    exe = shutil.which("voice-agent", path=str(Path(sys.executable).parent))
    assert exe is not None, f"no voice-agent console script next to {sys.executable}"
    return exe
