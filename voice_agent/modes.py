"""The backbone's other two modes: transcribe (ASR) and speak (TTS), driven from the CLI."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from voice_agent.backbone.base import ASREngine, TTSEngine
from voice_agent.backbone.text import normalize_for_speech
from voice_agent.catalog import voice_catalog
from voice_agent.frames import PCM
from voice_agent.persona import Voice

FEED_MS = 100


@dataclass(slots=True)
class Transcript:
    text: str
    audio_s: float
    final_ms: float
    """Time the final decode took after the last audio was fed."""
    partials: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "text": self.text,
            "audio_s": round(self.audio_s, 3),
            "final_ms": round(self.final_ms, 1),
            "partials": self.partials,
        }


def transcribe(
    asr: ASREngine,
    pcm: PCM,
    *,
    partial_interval_ms: int = 0,
    on_partial: Callable[[str], None] | None = None,
) -> Transcript:
    """Feed audio to an ASR stream as a live session would (in 100 ms pieces, a partial every
    `partial_interval_ms` of audio when asked), then take the final transcript."""
    stream = asr.stream()
    step = asr.sample_rate * FEED_MS // 1000
    every = asr.sample_rate * partial_interval_ms // 1000
    partials: list[str] = []
    since = 0
    for start in range(0, len(pcm), step):
        piece = pcm[start : start + step]
        stream.accept(piece)
        since += len(piece)
        if every and since >= every:
            since = 0
            text = stream.partial().strip()
            if text and (not partials or text != partials[-1]):
                partials.append(text)
                if on_partial is not None:
                    on_partial(text)
    t = time.perf_counter()
    text = stream.finalize().strip()
    final_ms = 1000 * (time.perf_counter() - t)
    return Transcript(text, len(pcm) / asr.sample_rate, final_ms, partials)


def parse_voice(spec: str, speed: float = 1.0) -> Voice:
    """`joe`, `piper:joe`, `kokoro:jf_alpha` or a blend `kokoro:jm_kumo=0.7,jf_alpha=0.3`."""
    engine, sep, rest = spec.partition(":")
    if not sep:
        engine, rest = "piper", spec
    try:
        if "=" in rest:
            blend = []
            for item in rest.split(","):
                vid, _, weight = item.partition("=")
                blend.append({"id": vid.strip(), "weight": float(weight)})
            voice = Voice.model_validate({"engine": engine, "blend": blend, "speed": speed})
        else:
            voice = Voice.model_validate({"engine": engine, "id": rest.strip(), "speed": speed})
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--voice {spec!r}: {exc}") from None
    problems = voice_catalog().problems(voice)
    if problems:
        raise ValueError(f"--voice {spec!r}: " + "; ".join(reason for _, reason in problems))
    return voice


def speak(tts: TTSEngine, text: str, voice: Voice) -> PCM:
    """Speech for `text` (normalised for speaking first); ValueError if nothing is left to say."""
    spoken = normalize_for_speech(text)
    if not spoken.strip():
        raise ValueError(
            "nothing to say: the text is empty once markdown, symbols and emoji are dropped"
        )
    pcm = tts.synthesize(spoken, voice)
    return pcm if len(pcm) else np.zeros(0, np.int16)
