"""The stages that drive the engines: ASR -> LLM -> TTS.

Each stage calls its engine through its session's lane of the shared `EngineExecutor` (sessions
take turns). `asr.py`: the user's speech to text; `llm.py`: the history and the streamed reply;
`tts.py`: the reply spoken clause by clause; `changes.py`: the persona change the LLM and TTS
stages take.
"""

from voice_agent.backbone.stages.asr import ASRStage
from voice_agent.backbone.stages.changes import PersonaChangeFrame
from voice_agent.backbone.stages.llm import LLMStage
from voice_agent.backbone.stages.tts import TTSStage

__all__ = ["ASRStage", "LLMStage", "PersonaChangeFrame", "TTSStage"]
