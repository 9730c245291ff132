"""The engines a server loads once and its sessions share, and what a session speaks through.

`load_engines` reads the settings: which class, which model file, which knobs. Each `load_*`
imports its engine's module only when that engine is chosen, so an optional runtime
(transformers, Kokoro's voices) costs nothing unless it is used, and a missing one is reported
with the extra to install. `Engines.backbone` gives each session its backbone: the local LLM and
TTS, or a connection to the remote realtime service when that is what the settings chose.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voice_agent.audio.smart_turn import load_smart_turn
from voice_agent.audio.vad import VoiceActivity, vad_factory
from voice_agent.backbone.backbone import Backbone, LocalBackbone
from voice_agent.backbone.base import ASREngine, LLMEngine, TTSEngine
from voice_agent.config import ASRSettings, EngineSettings, LLMSettings, Settings, TTSSettings
from voice_agent.executor import EngineExecutor
from voice_agent.modelfiles import ModelStore, default_cache_dir
from voice_agent.persona import Persona
from voice_agent.turns import TurnModel

log = logging.getLogger(__name__)

TTS_ENGINES = ("piper", "kokoro")


@dataclass(slots=True)
class Engines:
    """The engines sessions share, and the pool they run in."""

    asr: ASREngine
    llm: LLMEngine | None
    """None when a remote realtime service is the backbone (it thinks and speaks)."""
    tts: Mapping[str, TTSEngine]
    """By engine name ("piper", "kokoro"): a persona's voice picks one."""
    executor: EngineExecutor
    vad: Callable[[], VoiceActivity] | None = None
    """A fresh voice activity detector for each session; None when the transport reports speech
    start and stop itself."""
    turn_model: TurnModel | None = None
    """The end-of-turn model (Smart Turn); None ends turns on silence alone."""

    def close(self) -> None:
        """Release the engines' threads and models (at shutdown; sessions must have ended)."""
        for engine in (self.asr, self.llm, *self.tts.values()):  # (None has no close)
            close = getattr(engine, "close", None)
            if close is not None:
                close()
        self.executor.shutdown()

    def health(self) -> dict[str, Any]:
        """The state of engines that run apart and can fail on their own (the LLM server)."""
        health = getattr(self.llm, "health", None)
        return {"llm": health()} if health is not None else {}

    def tts_for(self, persona: Persona) -> TTSEngine:
        engine = self.tts.get(persona.voice.engine)
        if engine is None:
            raise ValueError(
                f"persona {persona.id} speaks with {persona.voice.engine}, which is not loaded "
                f"(loaded: {', '.join(self.tts) or 'none'}); "
                f"install it with: pip install 'voice-agent[{persona.voice.engine}]'"
            )
        return engine

    async def backbone(self, settings: Settings, persona: Persona) -> Backbone:
        """What a session with `persona` speaks through: a connection to the remote realtime
        service when the settings' backbone is one (`RemoteRealtimeError` says why it could not
        be opened), else the local LLM and TTS."""
        if settings.engines.backbone == "realtime":
            from voice_agent.backbone.realtime_stages import RemoteBackbone

            return await RemoteBackbone.connect(settings, persona)
        return self.local_backbone(settings)

    def local_backbone(self, settings: Settings) -> LocalBackbone:
        """The local LLM and TTS (ValueError if no LLM is loaded)."""
        if self.llm is None:
            raise ValueError("no LLM is loaded, and no realtime backbone is given")
        return LocalBackbone(self.llm, self.tts_for, settings)


def _timed(what: str, started: float) -> None:
    log.info("%s loaded in %.2f s", what, time.perf_counter() - started)


def load_asr(s: ASRSettings, store: ModelStore, workers: int = 1) -> ASREngine:
    """`workers`: how many calls may come at once (the engine pool's threads). CTranslate2 then
    runs them in parallel: two at once took 476 ms each instead of 586 ms, one alone the same
    (whisper-tiny, 2 cores, docs/scaling.md)."""
    from voice_agent.backbone.asr_whisper import WhisperASR

    t = time.perf_counter()
    path = s.model_path or store.path(s.model)
    engine = WhisperASR(
        path, compute_type=s.compute_type, threads=s.threads, workers=workers, language=s.language
    )
    _timed(f"ASR {s.model_path or s.model}", t)
    return engine


def load_llm(s: LLMSettings, store: ModelStore) -> LLMEngine:
    t = time.perf_counter()
    engine: LLMEngine
    if s.engine == "llama-server":
        from voice_agent.backbone.llm_llama_server import LlamaServerLLM

        engine = LlamaServerLLM(
            s.model_path or store.path(s.model),
            slots=s.slots,
            context_tokens=s.context_tokens,
            threads=s.threads,
            log_path=default_cache_dir().parent / "llm-server" / f"{os.getpid()}.log",
            sampling={"top_k": 40, "min_p": 0.05},
            timeout_s=s.request_timeout_s,
        )
    elif s.engine == "llama-cpp":
        from voice_agent.backbone.llm_llama import LlamaCppLLM

        engine = LlamaCppLLM(
            s.model_path or store.path(s.model), n_ctx=s.context_tokens, threads=s.threads
        )
    elif s.engine == "openai":
        from voice_agent.backbone.llm_openai import OpenAICompatibleLLM

        if not s.base_url:
            raise ValueError("engines.llm.base_url is required for the openai engine")
        key = os.environ.get(s.api_key_env)
        engine = OpenAICompatibleLLM(
            s.base_url, s.model, api_key=key, timeout_s=s.request_timeout_s
        )
    else:
        from voice_agent.backbone.llm_transformers import TransformersLLM

        engine = TransformersLLM(str(s.model_path or s.model))
    _timed(f"LLM {s.engine} {s.model_path or s.model}", t)
    return engine


def load_tts(name: str, s: TTSSettings, store: ModelStore) -> TTSEngine:
    """The TTS engine `name` ("piper" or "kokoro")."""
    t = time.perf_counter()
    engine: TTSEngine
    if name == "piper":
        from voice_agent.backbone.tts_piper import PiperTTS

        if s.piper_model_path is not None:
            model = s.piper_model_path
            config = Path(f"{model}.json")
        else:
            model = store.path(s.piper_model)
            config = store.file(s.piper_model, f"{model.name}.json")
        engine = PiperTTS(model, config, threads=s.threads)
    elif name == "kokoro":
        from voice_agent.backbone.tts_kokoro import KokoroTTS

        model = store.path(s.kokoro_model)
        voices = store.file(s.kokoro_model, "voices_ja.npz")
        engine = KokoroTTS(
            model, voices, store.file(s.kokoro_model, "vocab.json"), threads=s.threads
        )
    else:
        raise ValueError(f"unknown TTS engine {name!r}; known: {', '.join(TTS_ENGINES)}")
    _timed(f"TTS {name}", t)
    return engine


def load_engines(settings: Settings, tts: tuple[str, ...] = TTS_ENGINES) -> Engines:
    """Every engine the settings ask for, sharing one executor. TTS engines whose model is not
    installed are left out (a persona that needs one says so when its session starts)."""
    e: EngineSettings = settings.engines
    store = ModelStore(cache_dir=e.models_cache)
    remote = e.backbone == "realtime"  # the remote service speaks and thinks: no LLM, no TTS
    voices: dict[str, TTSEngine] = {}
    for name in () if remote else tts:
        try:
            voices[name] = load_tts(name, e.tts, store)
        except Exception as exc:
            if name == "piper":
                raise
            log.warning("TTS engine %s is not available: %s", name, exc)
    t = time.perf_counter()
    vad = vad_factory(settings.vad, store)
    smart_turn = load_smart_turn(store) if settings.turns.smart_turn else None
    _timed("VAD and turn model", t)
    return Engines(
        asr=load_asr(e.asr, store, workers=e.executor.workers),
        llm=None if remote else load_llm(e.llm, store),
        tts=voices,
        executor=EngineExecutor(
            e.executor.workers, e.executor.max_pending, e.executor.call_timeout_s
        ),
        vad=vad,
        turn_model=None if smart_turn is None else smart_turn.predict,
    )
