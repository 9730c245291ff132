"""Noise suppression before the VAD: WebRTC NS (pywebrtc-audio), for every transport.

A fan, a street or a café makes the VAD fire on noise and the ASR hear words that were not
said. `NoiseSuppressStage` runs WebRTC's noise suppressor on the microphone audio, after echo
cancellation (the local microphone's input stage) and before the VAD.

pywebrtc-audio 0.2.0 (a base dependency: a prebuilt `manylinux_2_27/2_28` x86-64 wheel; its
code is x86-64 baseline, some 33 000 SSE instructions, no AVX-512, with a single routine of 6
AVX/FMA instructions, the shape of WebRTC's CPU-checked fast paths; not checked on a CPU
without AVX), as found by introspection: `NoiseSuppressor(sample_rate=16000,
num_channels=1, level=1)` takes only 16, 32 or 48 kHz and a `level` of 0-3 (6, 12, 18 or 21 dB
of suppression; anything else is a ValueError); `process(audio)` takes a non-empty int16 or
float32 array (float64 is a ValueError) and returns the same dtype and length, delayed by 96
samples (6 ms) at 16 kHz; `speech_probability` is its own estimate for the last call, `reset()`
forgets the noise it has learnt. It works on 10 ms frames; it takes a ragged length too (its
tail handled in a way it does not document), so this module, like `echo.py`, only ever hands
it whole 10 ms frames. It learns the noise within the first second or so.

Who hears the cleaned audio: with `audio.noise_suppression_asr` on (the default) the frame's
audio is replaced and everything after hears it: the VAD, the ASR, the turn model, a remote
backbone; off, only the VAD does (`InputAudioFrame.vad_pcm`) and the rest keeps the raw
microphone audio. Measured, the ASR's WER with the raw audio was as good or worse than with the
suppressed audio in most conditions (the VAD's stretches then differ from what the ASR hears;
in babble at 5 dB, 93-96 % against 54-81 %): so both hear it.

Off by default (`audio.noise_suppression: off`): measured with `voice-agent bench noise`
(docs/noise.md), neither way lowered the WER in stationary noise beyond a few words either
way, the VAD never started a turn on stationary noise with or without it, and in babble it
made the VAD start more false turns.

Cost: about 1.5 ms of CPU per second of audio in 20 ms frames (0.15 % of a core), measured on
the development machine; it runs inline on the event loop, as the VAD does.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Literal, get_args

from voice_agent.audio.mic_stage import MicAudioStage
from voice_agent.audio.pcm import WholeFrames
from voice_agent.config import NoiseLevel
from voice_agent.frames import PCM, InputAudioFrame

if TYPE_CHECKING:
    import pywebrtc_audio


RATES = (16000, 32000, 48000)
"""The rates WebRTC NS takes (the pipeline's microphone rate is 16 kHz)."""

LEVELS: dict[NoiseLevel, int] = {"low": 0, "moderate": 1, "high": 2, "very-high": 3}
"""The setting's names for WebRTC NS's levels: 6, 12, 18 and 21 dB of suppression."""

PACKAGE = "pywebrtc-audio==0.2.0"

Listener = Literal["vad", "all"]
"""Who hears the suppressed audio: the VAD only, or everything after it (the ASR too)."""


class NoiseSuppressor:
    """WebRTC NS over audio of any frame size, in whole 10 ms frames (see the module).

    `process` returns the whole 10 ms frames ready: what it was given plus what was left over
    from the last call, rounded down; the rest (under 10 ms) waits for the next call. So 20 ms
    frames come out at once, the same length. Not thread-safe. `cpu_s` and `audio_s` count
    the CPU time spent and the audio processed.
    """

    def __init__(self, level: NoiseLevel, sample_rate: int = 16000) -> None:
        if level not in LEVELS:
            raise ValueError(f"noise suppression level {level!r}: one of {', '.join(LEVELS)}")
        if sample_rate not in RATES:
            raise ValueError(f"WebRTC NS works at {RATES} Hz, not {sample_rate}")
        try:
            import pywebrtc_audio
        except ImportError as exc:
            raise ImportError(
                f"noise suppression needs the {PACKAGE.split('==')[0]} package ({exc}): "
                f"pip install '{PACKAGE}', or set audio.noise_suppression: off"
            ) from None
        self.level = level
        self.sample_rate = sample_rate
        self._frames = WholeFrames(sample_rate // 100)
        self._ns: pywebrtc_audio.NoiseSuppressor = pywebrtc_audio.NoiseSuppressor(
            sample_rate, 1, LEVELS[level]
        )
        self.cpu_s = 0.0
        self.audio_s = 0.0

    @property
    def cpu_ms_per_s(self) -> float:
        """CPU time per second of audio so far, in ms (nan before any)."""
        return 1000.0 * self.cpu_s / self.audio_s if self.audio_s else float("nan")

    def process(self, pcm: PCM) -> PCM:
        """Suppress the noise in mono int16 audio at the suppressor's rate (any length):
        returns the whole 10 ms frames ready, possibly none."""
        whole = self._frames.take(pcm)
        if len(whole) == 0:
            return whole
        t = time.thread_time()
        out: PCM = self._ns.process(whole)
        self.cpu_s += time.thread_time() - t
        self.audio_s += len(whole) / self.sample_rate
        return out

    def reset(self) -> None:
        """Forget the noise learnt and the audio waiting."""
        self._ns.reset()
        self._frames.clear()


class NoiseSuppressStage(MicAudioStage):
    """Suppresses the noise in the microphone audio (`InputAudioFrame`s), before the VAD.

    With `listener="all"` (the default) each audio frame's `pcm` is replaced by the suppressed
    audio (a frame with nothing ready yet, under 10 ms of audio, is dropped); with `"vad"` it
    goes on unchanged, carrying the suppressed audio in `vad_pcm` for the VAD alone. Audio at
    another rate than the suppressor's passes through untouched (with one warning), as does
    every other frame. Nothing is emitted per frame; the cost is in `suppressor.cpu_ms_per_s`.
    """

    worker, kept = "suppressor", "noise"

    def __init__(
        self, suppressor: NoiseSuppressor, listener: Listener = "all", name: str | None = None
    ) -> None:
        super().__init__(name)
        if listener not in get_args(Listener):
            raise ValueError(f"listener {listener!r}: one of {get_args(Listener)}")
        self.suppressor = suppressor
        self.sample_rate = suppressor.sample_rate
        self.listener = listener

    def clean(self, frame: InputAudioFrame) -> InputAudioFrame | None:
        pcm = self.suppressor.process(frame.pcm)
        if self.listener == "vad":
            return dataclasses.replace(frame, vad_pcm=pcm)
        return dataclasses.replace(frame, pcm=pcm) if len(pcm) else None


def noise_stage(
    level: NoiseLevel, asr_hears_it: bool, sample_rate: int
) -> NoiseSuppressStage | None:
    """The stage a session puts before its VAD for a setting (None for `off`); ImportError
    naming the package when pywebrtc-audio is missing."""
    if level == "off":
        return None
    return NoiseSuppressStage(NoiseSuppressor(level, sample_rate), "all" if asr_hears_it else "vad")
