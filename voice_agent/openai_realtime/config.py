"""What a Realtime client's `session.update` sets, as the frames that change a voice-agent
session (`SessionLink` is all the conversation knows of that session).

- `instructions` replace the persona's system prompt (its examples go, its manners stay);
- `voice` names a persona (its voice, prompt, manners and patience) or a voice of the persona's
  TTS engine;
- `turn_detection` `server_vad`/`semantic_vad` is our turn engine (`threshold` for the VAD,
  `silence_duration_ms` for a finished turn's silence, `create_response`,
  `interrupt_response`); `null` turns the VAD off and leaves the turns to the client;
- `output_modalities` `["text"]`: replies as text, nothing synthesized.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from voice_agent.backbone.base import TTSEngine
from voice_agent.backbone.stages import PersonaChangeFrame
from voice_agent.config import Settings
from voice_agent.frames import (
    Direction,
    Frame,
    SpeechDetectionFrame,
    SpokenRepliesFrame,
)
from voice_agent.openai_realtime.schema import (
    RATE,
    Modality,
    RealtimeError,
    SessionChanges,
    TurnDetection,
)
from voice_agent.persona import Persona, PersonaStore, Voice
from voice_agent.turns import TurnPolicy
from voice_agent.turns.policy import TurnPolicyFrame

if TYPE_CHECKING:
    from voice_agent.session import Session


@dataclass(frozen=True, slots=True)
class SessionLink:
    """What a Realtime conversation knows of its session, and its only ways to act on it."""

    id: str
    settings: Settings
    persona: Persona
    """The persona the session starts with."""
    tts: Mapping[str, TTSEngine]
    """The loaded TTS engines by name (their voices can be named)."""
    tts_for: Callable[[Persona], TTSEngine | None]
    """The engine that would speak as a persona (None: the backbone speaks); ValueError if it
    is not loaded."""
    change: Callable[[Frame, Direction], None]
    """Send a change of setting or an edit of the history into the pipeline."""
    interrupt: Callable[[str], None]
    """Interrupt the reply in progress (with a reason)."""

    @classmethod
    def of(cls, session: Session) -> SessionLink:
        return cls(
            session.id,
            session.settings,
            session.persona,
            session.engines.tts,
            session.backbone.tts_for,
            session.change,
            session.pipeline.interrupt,
        )


class RealtimeConfig:
    """One session's Realtime settings (see the module docstring)."""

    def __init__(
        self, link: SessionLink, personas: PersonaStore, *, model: str, beta: bool
    ) -> None:
        self.link = link
        self.personas = personas
        self.model = model
        self.beta = beta
        self.persona = link.persona
        self.voice = link.persona.id
        self.instructions = link.persona.system_prompt
        self.turn_detection: TurnDetection | None = TurnDetection()
        self.modalities: tuple[Modality, ...] = ("audio",)
        self._turn_changes: dict[str, Any] = {}
        """Fields of the turn policy set here: they outlive a change of persona."""

    @property
    def spoken(self) -> bool:
        return "audio" in self.modalities

    def apply(self, changes: SessionChanges) -> list[Frame]:
        """Change what `changes` names; the frames that make the changes, in order.
        `RealtimeError` (and nothing changed) for a value that cannot be used."""
        frames: list[Frame] = []
        persona = self.persona
        if changes.voice is not None:
            persona = self._persona_for_voice(changes.voice, persona)
        if changes.instructions is not None:
            try:
                persona = Persona.model_validate(
                    {**persona.model_dump(), "system_prompt": changes.instructions, "examples": []}
                )
            except ValidationError as err:
                message = err.errors()[0]["msg"]
                raise RealtimeError(
                    "invalid_value", f"instructions: {message}", "session.instructions"
                ) from None
        turn_policy = persona is not self.persona
        if turn_policy:
            try:
                tts = self.link.tts_for(persona)
            except ValueError as exc:
                where = "session.audio.output.voice"
                raise RealtimeError("invalid_value", str(exc), where) from None
            frames.append(PersonaChangeFrame(persona=persona, tts=tts))
            self.persona = persona
        self.voice = changes.voice or self.voice
        self.instructions = persona.system_prompt
        if changes.sets_turn_detection:
            frames.append(self._set_turn_detection(changes.turn_detection))
            turn_policy = True
        if changes.modalities is not None:
            self.modalities = changes.modalities
            frames.append(SpokenRepliesFrame(spoken=self.spoken))
            self._turn_changes["preemptive_reply"] = self.spoken
            turn_policy = True
        if turn_policy:
            base = TurnPolicy.of(self.link.settings, self.persona)
            frames.append(TurnPolicyFrame(policy=replace(base, **self._turn_changes)))
        return frames

    def _persona_for_voice(self, voice: str, persona: Persona) -> Persona:
        if voice in self.personas.ids():
            try:
                return self.personas.get(voice)
            except Exception as exc:  # a persona file that does not load
                raise RealtimeError("invalid_value", str(exc), "voice") from None
        engine = self.link.tts.get(persona.voice.engine)
        voices: list[str] = list(getattr(engine, "voices", []))
        if voice not in voices:
            raise RealtimeError(
                "invalid_value",
                f"unknown voice {voice!r}: name a persona ({', '.join(self.personas.ids())}) "
                f"or a {persona.voice.engine} voice ({', '.join(voices[:20])})",
                "session.audio.output.voice",
            )
        new_voice = Voice(engine=persona.voice.engine, id=voice, speed=persona.voice.speed)
        return persona.model_copy(update={"voice": new_voice})

    def _set_turn_detection(self, td: TurnDetection | None) -> SpeechDetectionFrame:
        """The turn detection `td`: the turn policy's changes, and the VAD's frame."""
        self.turn_detection = td
        default = self.link.settings.vad.confirm_threshold
        if td is None:
            self._turn_changes.update(auto_end=False, auto_reply=False, barge_in=False)
            return SpeechDetectionFrame(enabled=False, threshold=default)
        self._turn_changes.update(
            auto_end=True, auto_reply=td.create_response, barge_in=td.interrupt_response
        )
        if td.silence_duration_ms is not None:
            self._turn_changes["endpoint_silence_ms"] = td.silence_duration_ms
        threshold = default if td.threshold is None else td.threshold
        return SpeechDetectionFrame(enabled=True, threshold=threshold)

    def as_json(self) -> dict[str, Any]:
        """The session as `session.created` / `session.updated` show it (GA or beta shape)."""
        fmt = {"type": "audio/pcm", "rate": RATE}
        td = None if self.turn_detection is None else self.turn_detection.as_json()
        transcription = {"model": self.link.settings.engines.asr.model}
        if self.beta:
            return {
                "id": self.link.id,
                "object": "realtime.session",
                "model": self.model,
                "modalities": ["text", "audio"] if self.spoken else ["text"],
                "instructions": self.instructions,
                "voice": self.voice,
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "input_audio_transcription": transcription,
                "turn_detection": td,
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.link.id,
            "model": self.model,
            "output_modalities": list(self.modalities),
            "instructions": self.instructions,
            "audio": {
                "input": {"format": fmt, "transcription": transcription, "turn_detection": td},
                "output": {"format": fmt, "voice": self.voice},
            },
        }
