"""The frame the LLM and TTS stages take when a session changes persona (a Realtime
client's `session.update`)."""

from __future__ import annotations

from dataclasses import dataclass

from voice_agent.backbone.base import TTSEngine
from voice_agent.frames import (
    SystemFrame,
)
from voice_agent.persona import Persona


@dataclass(slots=True, kw_only=True)
class PersonaChangeFrame(SystemFrame):
    """Behave and speak as `persona` from now on: its prompt and manners (the LLM stage), its
    voice with `tts`, the engine that speaks it (the TTS stage; None: the engine stays)."""

    persona: Persona
    tts: TTSEngine | None = None
