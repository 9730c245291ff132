"""What a Realtime client's `session.update` sets, applied to a voice-agent `Session`.

- `instructions` replace the persona's system prompt (its examples go, its manners stay);
- `voice` names a persona (its voice, prompt, manners and patience) or a voice of the persona's
  TTS engine;
- `turn_detection` `server_vad`/`semantic_vad` is our turn engine (`threshold` for the VAD,
  `silence_duration_ms` for a finished turn's silence, `create_response`,
  `interrupt_response`); `null` turns the VAD off and leaves the turns to the client;
- `output_modalities` `["text"]`: replies as text, nothing synthesized.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from voice_agent.persona import Persona, PersonaStore, Voice
from voice_agent.realtime.schema import (
    RATE,
    Modality,
    RealtimeError,
    SessionChanges,
    TurnDetection,
)
from voice_agent.session import Session


class RealtimeConfig:
    """One session's Realtime settings (see the module docstring)."""

    def __init__(self, session: Session, personas: PersonaStore, *, model: str, beta: bool) -> None:
        self.session = session
        self.personas = personas
        self.model = model
        self.beta = beta
        self.voice = session.persona.id
        self.instructions = session.persona.system_prompt
        self.turn_detection: TurnDetection | None = TurnDetection()
        self.modalities: tuple[Modality, ...] = ("audio",)

    @property
    def spoken(self) -> bool:
        return "audio" in self.modalities

    def apply(self, changes: SessionChanges) -> None:
        """Change what `changes` names; `RealtimeError` (and nothing changed of the persona)
        for a value that cannot be used."""
        persona = self.session.persona
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
        if persona is not self.session.persona:
            try:
                self.session.set_persona(persona)
            except ValueError as exc:
                where = "session.audio.output.voice"
                raise RealtimeError("invalid_value", str(exc), where) from None
        self.voice = changes.voice or self.voice
        self.instructions = persona.system_prompt
        if changes.sets_turn_detection:
            self._set_turn_detection(changes.turn_detection)
        if changes.modalities is not None:
            self.modalities = changes.modalities
            self.session.set_spoken(self.spoken)
            self.session.set_turn_policy(preemptive_reply=self.spoken)

    def _persona_for_voice(self, voice: str, persona: Persona) -> Persona:
        if voice in self.personas.ids():
            try:
                return self.personas.get(voice)
            except Exception as exc:  # a persona file that does not load
                raise RealtimeError("invalid_value", str(exc), "voice") from None
        engine = self.session.engines.tts.get(persona.voice.engine)
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

    def _set_turn_detection(self, td: TurnDetection | None) -> None:
        self.turn_detection = td
        if td is None:
            self.session.set_speech_detection(False)
            self.session.set_turn_policy(auto_end=False, auto_reply=False, barge_in=False)
            return
        self.session.set_speech_detection(True, td.threshold)
        changes: dict[str, Any] = {
            "auto_end": True,
            "auto_reply": td.create_response,
            "barge_in": td.interrupt_response,
        }
        if td.silence_duration_ms is not None:
            changes["endpoint_silence_ms"] = td.silence_duration_ms
        self.session.set_turn_policy(**changes)

    def as_json(self) -> dict[str, Any]:
        """The session as `session.created` / `session.updated` show it (GA or beta shape)."""
        fmt = {"type": "audio/pcm", "rate": RATE}
        td = None if self.turn_detection is None else self.turn_detection.as_json()
        transcription = {"model": self.session.settings.engines.asr.model}
        if self.beta:
            return {
                "id": self.session.id,
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
            "id": self.session.id,
            "model": self.model,
            "output_modalities": list(self.modalities),
            "instructions": self.instructions,
            "audio": {
                "input": {"format": fmt, "transcription": transcription, "turn_detection": td},
                "output": {"format": fmt, "voice": self.voice},
            },
        }
