"""The engine checks themselves: what each one loads and runs once, what it depends on, how it is
named for people, and how to repair its runtime when it crashes. They run in the child process
that `voice_agent.enginecheck.runner` starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from voice_agent import nativecode
from voice_agent.config import Settings

Check = Callable[[Settings], str]
"""Loads one engine as the settings say and runs it once; returns what it did, for people."""


def _store(settings: Settings) -> Any:
    from voice_agent.modelfiles import ModelStore

    return ModelStore(cache_dir=settings.engines.models_cache, progress=None)


def _noise(seconds: float, rate: int = 16000) -> np.ndarray[Any, np.dtype[np.int16]]:
    return (np.random.default_rng(0).standard_normal(int(seconds * rate)) * 300).astype(np.int16)


def _check_asr(settings: Settings) -> str:
    from voice_agent.engines import load_asr

    stream = load_asr(settings.engines.asr, _store(settings)).stream()
    stream.accept(_noise(1.0))
    return f"transcribed 1 s of audio ({stream.finalize()!r})"


def _check_llm(settings: Settings) -> str:
    from voice_agent.backbone.base import GenerationParams
    from voice_agent.engines import load_llm

    engine = load_llm(settings.engines.llm, _store(settings))
    try:
        reply = engine.stream(
            [{"role": "user", "content": "Say hello."}], GenerationParams(max_tokens=8)
        )
        text = "".join(reply)
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()
    return f"generated {text.strip()!r}"


def _check_tts(settings: Settings) -> str:
    from voice_agent.engines import load_tts
    from voice_agent.persona import Voice

    tts = load_tts("piper", settings.engines.tts, _store(settings))
    pcm = tts.synthesize("Hello.", Voice(engine="piper", id="joe"))
    return f"synthesized {len(pcm) / tts.sample_rate:.2f} s of speech"


def _check_turns(settings: Settings) -> str:
    from voice_agent.audio.smart_turn import load_smart_turn
    from voice_agent.audio.vad import vad_factory

    store = _store(settings)
    vad_factory(settings.vad, store)().feed(_noise(1.0))
    if not settings.turns.smart_turn:
        return "VAD ran (Smart Turn is off)"
    score = load_smart_turn(store).predict(_noise(1.0))
    return f"VAD and Smart Turn ran (score {score:.2f})"


CHECKS: dict[str, Check] = {
    "asr": _check_asr,
    "llm": _check_llm,
    "tts": _check_tts,
    "turns": _check_turns,
}


def describe(name: str, settings: Settings) -> str:
    """The engine a check runs, for people: ``LLM (llama-cpp, qwen2.5-0.5b)``."""
    e = settings.engines
    return {
        "asr": f"ASR ({e.asr.model_path or e.asr.model})",
        "llm": f"LLM ({e.llm.engine}, {e.llm.model_path or e.llm.model})",
        "tts": f"TTS (piper, {e.tts.piper_model_path or e.tts.piper_model})",
        "turns": "VAD and turn model (Silero, Smart Turn)",
    }.get(name, name)


def settings_of(name: str, settings: Settings) -> list[Any]:
    """The settings a check's result depends on, as JSON."""
    e = settings.engines
    parts: dict[str, list[Any]] = {
        "asr": [e.asr],
        "llm": [e.llm],
        "tts": [e.tts],
        "turns": [settings.vad, settings.turns],
    }
    return [p.model_dump(mode="json") for p in parts.get(name, [settings])]


def needed(settings: Settings) -> list[str]:
    """The checks for the engines `serve` and `talk` load with these settings."""
    if settings.engines.backbone == "realtime":  # the remote service thinks and speaks
        return ["asr", "turns"]
    return ["asr", "llm", "tts", "turns"]


def crash_repair(name: str, settings: Settings) -> str:
    """How to repair the runtime of a check that crashed (died of a signal) on this CPU."""
    if name == "llm" and settings.engines.llm.engine == "llama-server":
        return (
            "its runtime (xllamacpp) crashed on this CPU: reinstall it (pip install "
            "--force-reinstall xllamacpp) and run `voice-agent doctor`"
        )
    if name == "llm":
        cpu = nativecode.cpu()
        if cpu.missing:
            return (
                f"this CPU lacks {', '.join(cpu.missing)}, which the portable llama.cpp build "
                "needs: rebuild it for this machine with VOICE_AGENT_LLAMA_CMAKE_ARGS="
                "'-DGGML_NATIVE=ON' scripts/bootstrap.sh (docs/models.md), or point "
                "engines.llm at an OpenAI-compatible server"
            )
        return (
            "llama.cpp (llama-cpp-python) was built for another CPU: rebuild it portable with "
            "scripts/bootstrap.sh (or make setup); `voice-agent doctor` shows the details"
        )
    package = {"asr": "ctranslate2", "tts": "onnxruntime", "turns": "onnxruntime"}.get(name, "")
    return (
        f"its runtime crashed on this CPU: reinstall it (pip install --force-reinstall {package})"
        " and run `voice-agent doctor`"
    )
