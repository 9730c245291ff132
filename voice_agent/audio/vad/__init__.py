"""Voice activity detection: speech start and stop in the microphone's 16 kHz audio.

- `models`: the detectors, the WebRTC gate (`WebRtcGate`) and the Silero model (`SileroVAD`).
- `activity`: `VoiceActivity`, the synchronous state machine that turns audio into `VadEvent`s
  at exact sample positions, and `load_vad` / `vad_factory`, which build it over the catalog's
  model.
- `stage`: `VADStage`, which runs it on the pipeline's audio frames and sends its events as
  frames.
"""

from voice_agent.audio.vad.activity import VadEvent, VoiceActivity, load_vad, vad_factory
from voice_agent.audio.vad.models import MODEL_ID, SAMPLE_RATE, WINDOW, SileroVAD, WebRtcGate
from voice_agent.audio.vad.stage import VADStage

__all__ = [
    "MODEL_ID",
    "SAMPLE_RATE",
    "WINDOW",
    "SileroVAD",
    "VADStage",
    "VadEvent",
    "VoiceActivity",
    "WebRtcGate",
    "load_vad",
    "vad_factory",
]
