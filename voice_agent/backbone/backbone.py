"""The backbone: what answers a session's turns and speaks the replies.

Two kinds, chosen once, by the engines the server loaded (`voice_agent.engines.Engines.backbone`):

- `LocalBackbone`: this process's LLM and TTS engines, as an `LLMStage` and a `TTSStage` after the
  turn-taking.
- `RemoteBackbone` (backbone/realtime_stages.py): a remote OpenAI-Realtime-compatible service that
  thinks and speaks; it also hears the user's audio, through a stage right after the VAD.

A session asks its backbone for its stages (`Backbone.stages`) and for nothing else: no other
module asks which kind it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from voice_agent.backbone.base import GenerationParams, LLMEngine, TTSEngine
from voice_agent.backbone.stages import LLMStage, TTSStage
from voice_agent.backbone.text import normalize_for_speech
from voice_agent.config import Settings
from voice_agent.executor import Runner
from voice_agent.history import History
from voice_agent.persona import Persona
from voice_agent.pipeline import Stage


@dataclass(frozen=True, slots=True)
class Conversation:
    """What a session gives its backbone: who it is, how it calls engines, what was said."""

    name: str
    lane: Runner
    """The session's lane of the engine pool."""
    history: History
    persona: Persona
    preroll_ms: int
    """Audio from before the VAD's speech onset that goes with each stretch of speech."""


@dataclass(slots=True)
class BackboneStages:
    """A session's backbone stages, by where they go in its pipeline."""

    reply: list[Stage]
    """After the turn-taking, before playback: they answer `UserTurnFrame`s with speech."""
    listen: list[Stage] = field(default_factory=list)
    """After the VAD, before the ASR: a backbone that hears the user's audio itself."""


class Backbone(Protocol):
    """What answers a session's turns (see the module docstring)."""

    speaks_fixed_text: bool
    """Whether its reply stage speaks a `SayFrame` (a greeting, a re-prompt) as written."""

    def stages(self, conversation: Conversation) -> BackboneStages:
        """The stages of one session. A backbone that connects per session (the remote one)
        gives its connection to these stages, whose cleanup closes it."""

    def tts_for(self, persona: Persona) -> TTSEngine | None:
        """The engine that would speak as `persona`; None when the backbone speaks itself (a
        remote service). ValueError if that engine is not loaded."""

    async def aclose(self) -> None:
        """Release what this backbone holds for its session (safe to call twice)."""


class LocalBackbone:
    """The LLM and TTS engines of this process, shared by every session."""

    speaks_fixed_text = True

    def __init__(
        self, llm: LLMEngine, tts_for: Callable[[Persona], TTSEngine], settings: Settings
    ) -> None:
        self.llm = llm
        self._tts_for = tts_for
        self.settings = settings

    def stages(self, conversation: Conversation) -> BackboneStages:
        c, s = conversation, self.settings.engines
        params = GenerationParams(
            s.llm.max_tokens,
            s.llm.temperature,
            s.llm.top_p,
            s.llm.repeat_penalty,
            conversation=c.name,
        )
        llm = LLMStage(self.llm, c.lane, c.persona, params, s.llm.context_tokens, c.history)
        tts = TTSStage(
            self._tts_for(c.persona),
            c.lane,
            c.persona,
            s.tts.first_clause_max_chars,
            normalize_for_speech,
        )
        return BackboneStages(reply=[llm, tts])

    def tts_for(self, persona: Persona) -> TTSEngine:
        return self._tts_for(persona)

    async def aclose(self) -> None:
        """Nothing to release: the engines are the server's."""
