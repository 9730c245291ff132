"""The two detectors `VoiceActivity` consults: the WebRTC gate and the Silero model.

`WebRtcGate` is the cheap first judge (``webrtcvad``) of short gate frames; `SileroVAD`
(``silero_vad.onnx`` shipped in pipecat-ai, catalog id ``silero-vad``) scores the 512-sample
windows the gate lets through. Both run at 16 kHz only.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import webrtcvad

from voice_agent.frames import PCM
from voice_agent.modelfiles import ModelError

MODEL_ID = "silero-vad"
SAMPLE_RATE = 16000
"""The only rate the VAD runs at."""
WINDOW = 512
"""Samples per decision (32 ms): Silero's window at 16 kHz."""
CONTEXT = 64
"""Samples of the previous window Silero sees before each window."""


def _reinstall_hint() -> str:
    try:
        from voice_agent.catalog import load_catalog

        entry = load_catalog().get(MODEL_ID)
        pin = f"{entry.package}=={entry.version}"
    except Exception:  # the catalog itself is broken: still say which package
        pin = "pipecat-ai"
    return f"reinstall with: pip install --force-reinstall --no-deps {pin}"


class SileroVAD:
    """Silero VAD v5 on the CPU (one thread): the speech probability of 512-sample windows.

    The model is recurrent and sees the last 64 samples of the previous window, so one
    instance follows one stream: call `prob` (or `skip`) for consecutive windows, `reset` at
    a new stream. Not thread-safe.
    """

    def __init__(self, model: Path) -> None:
        import onnxruntime as ort

        model = Path(model)
        if not model.is_file():
            raise ModelError(f"{MODEL_ID}: {model} is missing; {_reinstall_hint()}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session: Any = ort.InferenceSession(
                str(model), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ModelError(
                f"{MODEL_ID}: cannot load {model} ({exc}); {_reinstall_hint()}"
            ) from exc
        names = sorted(i.name for i in self._session.get_inputs())
        if names != ["input", "sr", "state"]:
            raise ModelError(
                f"{MODEL_ID}: {model} is not a Silero VAD v5 model (inputs {names}); "
                f"{_reinstall_hint()}"
            )
        self.path = model
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self._input = np.zeros((1, CONTEXT + WINDOW), dtype=np.float32)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._skipped = False

    def fresh(self) -> SileroVAD:
        """A new stream over the same loaded model: the onnxruntime session is shared (it may
        run from several threads), the state and context are the new stream's own."""
        other = copy.copy(self)
        other._input = np.zeros_like(self._input)
        other.reset()
        return other

    def reset(self) -> None:
        """Forget the stream: clear the recurrent state and the context."""
        self._input[:] = 0.0
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._skipped = False

    def prob(self, window: PCM) -> float:
        """The probability (0..1) that `window` (512 int16 samples at 16 kHz) is speech.

        If the window before it was skipped, the model reads that one first (one more
        inference), so it never scores the start of a sound cold."""
        if self._skipped:
            self._run()
        self._load(window)
        self._skipped = False
        return self._run()

    def skip(self, window: PCM) -> None:
        """Move past `window` without scoring it (keeps the context continuous)."""
        self._load(window)
        self._skipped = True

    def _run(self) -> float:
        out, self._state = self._session.run(
            ["output", "stateN"], {"input": self._input, "state": self._state, "sr": self._sr}
        )
        return float(out[0, 0])

    def _load(self, window: PCM) -> None:
        if len(window) != WINDOW:
            raise ValueError(f"Silero needs windows of {WINDOW} samples, not {len(window)}")
        x = self._input[0]
        x[:CONTEXT] = x[WINDOW:]
        np.multiply(window, 1.0 / 32768.0, out=x[CONTEXT:], casting="unsafe")


class WebRtcGate:
    """The WebRTC VAD on frames of 10, 20 or 30 ms at 16 kHz (cheap, stateful, not thread-safe)."""

    def __init__(self, aggressiveness: int, frame_ms: int) -> None:
        if frame_ms not in (10, 20, 30):
            raise ValueError(f"the WebRTC VAD takes 10, 20 or 30 ms frames, not {frame_ms}")
        self._vad = webrtcvad.Vad(aggressiveness)
        self.frame = SAMPLE_RATE * frame_ms // 1000
        """Samples per gate frame."""

    def is_speech(self, frame: PCM) -> bool:
        return bool(self._vad.is_speech(frame.tobytes(), SAMPLE_RATE))


__all__ = ["MODEL_ID", "SAMPLE_RATE", "WINDOW", "SileroVAD", "WebRtcGate"]
