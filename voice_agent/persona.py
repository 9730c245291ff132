"""Personas: who the assistant is (voice, prompt, manners, turn-taking patience), from YAML.

A persona file is validated whole: `load_persona` returns a complete Persona or raises a
FileError listing every problem as ``file:line: field: reason``; nothing is half-loaded.
`PersonaStore` reads the built-in personas and then the user's folders on top, and re-reads a
file when it changes, so an edit takes effect on the next session without a restart (a broken
edit keeps the last good version in service and reports why).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from voice_agent import resources
from voice_agent.catalog import VoiceCatalog, voice_catalog
from voice_agent.config import NoiseSuppression
from voice_agent.yamlfile import FileError, Problem, load_yaml

log = logging.getLogger(__name__)

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

Text = Annotated[str, Field(min_length=1, max_length=200)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class VoiceMix(Model):
    id: Text
    weight: Annotated[float, Field(gt=0, le=1)]


class Voice(Model):
    """Which TTS engine speaks, with which voice (or a weighted blend of voices), how fast."""

    engine: Literal["piper", "kokoro"] = "piper"
    id: Text | None = None
    blend: list[VoiceMix] | None = Field(default=None, min_length=2, max_length=4)
    speed: Annotated[float, Field(ge=0.5, le=2.0)] = 1.0

    @model_validator(mode="after")
    def _one_of_id_or_blend(self) -> Voice:
        if (self.id is None) == (self.blend is None):
            raise ValueError("give either id (one voice) or blend (weighted voices), not both")
        return self

    @property
    def voice_ids(self) -> list[str]:
        return [self.id] if self.id is not None else [m.id for m in self.blend or []]


class Style(Model):
    language: Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] = "en"
    max_sentences: Annotated[int, Field(ge=1, le=20)] = 2


class TurnTaking(Model):
    """How patient the persona is: when a turn ends, and what counts as an interruption."""

    endpoint_silence_ms: Annotated[int, Field(ge=100, le=5000)] = 500
    min_interruption_ms: Annotated[int, Field(ge=0, le=5000)] = 300
    backchannels_interrupt: bool = False
    """Whether "uh-huh", "yeah", "right" while the assistant speaks stop it."""


Line = Annotated[str, Field(min_length=1, max_length=500)]


class Idle(Model):
    """What the assistant does when the caller goes quiet (voice_agent/turns/idle.py): after
    `after_s` of silence from the caller (time the assistant speaks, thinks or is busy does not
    count, nor noise without words) it says a re-prompt, the next in turn; after
    `max_reprompts` of them and `after_s` more, its `goodbye`, and the session ends (`idle`)."""

    after_s: Annotated[float, Field(ge=1, le=600)] = 10.0
    reprompts: list[Line] = Field(default=[], max_length=20)
    max_reprompts: Annotated[int, Field(ge=0, le=20)] = 2
    goodbye: Annotated[str, Field(max_length=500)] = ""
    """Said before the session ends ("": it ends without a word)."""

    @model_validator(mode="after")
    def _reprompts_to_say(self) -> Idle:
        if self.max_reprompts and not self.reprompts:
            raise ValueError("max_reprompts is above 0 but there are no reprompts to say")
        return self


class TimeLimit(Model):
    """The longest a session with this persona lasts, and what it says when time is up."""

    max_s: Annotated[float, Field(ge=10, le=7 * 86400)] | None = None
    """At most the server's `server.max_session_s`, which caps every session (None: that)."""
    goodbye: Annotated[str, Field(max_length=500)] = ""
    """Said when time is up, before the session ends (`max_duration`)."""


class Example(Model):
    user: Annotated[str, Field(min_length=1, max_length=2000)]
    assistant: Annotated[str, Field(min_length=1, max_length=2000)]


class Persona(Model):
    """A persona as written in its YAML file."""

    id: Annotated[str, Field(pattern=ID_PATTERN)]
    name: Text
    description: Annotated[str, Field(min_length=1, max_length=1000)]
    system_prompt: Annotated[str, Field(max_length=8000)]
    greeting: Annotated[str, Field(max_length=500)] = ""
    apology: Annotated[str, Field(max_length=500)] = (
        "Sorry, I could not answer that just now. Could you say it again?"
    )
    """Spoken when a reply fails before it has said anything (an engine error, timeout or
    overload); the client gets an `error` event as well."""
    voice: Voice = Voice(id="joe")
    style: Style = Style()
    turn_taking: TurnTaking = TurnTaking()
    idle: Idle | None = None
    """Re-prompt a caller who goes quiet, then end the session (None: never)."""
    time_limit: TimeLimit = TimeLimit()
    examples: list[Example] = Field(default=[], max_length=20)
    never_say: list[Text] = Field(default=[], max_length=100)
    noise_suppression: NoiseSuppression | None = None
    """Noise suppression before the VAD for this persona's sessions (None: the setting's,
    `audio.noise_suppression`)."""

    @field_validator("system_prompt")
    @classmethod
    def _prompt_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty: it is what makes the persona")
        return v


def load_persona(path: Path, voices: VoiceCatalog | None = None) -> Persona:
    """Load and validate one persona file; raise FileError with every problem found."""
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise FileError([Problem(doc.file, 1, "", "a persona file must be a mapping of fields")])
    problems: list[Problem] = []
    persona = None
    try:
        persona = Persona.model_validate(doc.data)
    except ValidationError as err:
        problems += doc.problems_from(err)
    if doc.data.get("id", path.stem) != path.stem:
        problems.append(
            Problem(doc.file, doc.line_of(("id",)), "id", f"must match the file name {path.stem!r}")
        )
    try:  # checked on its own, so an unknown voice is reported together with other problems
        voice = (
            persona.voice
            if persona is not None
            else Voice.model_validate(doc.data.get("voice", {}))
        )
    except ValidationError:
        voice = None
    if voice is not None:
        for field, reason in (voices or voice_catalog()).problems(voice):
            loc = tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", field) if p)
            problems.append(Problem(doc.file, doc.line_of(loc), field, reason))
    if problems or persona is None:
        raise FileError(sorted(problems, key=lambda p: p.line or 0))
    return persona


@dataclass(slots=True)
class _Entry:
    path: Path
    mtime_ns: int
    size: int
    persona: Persona | None
    error: FileError | None


class PersonaStore:
    """Built-in personas, then each user folder on top; a file is re-read when it changes."""

    def __init__(self, dirs: Iterable[Path] = (), voices: VoiceCatalog | None = None) -> None:
        self.dirs = [resources.personas_dir(), *(Path(d).expanduser() for d in dirs)]
        self._voices = voices
        self._entries: dict[Path, _Entry] = {}

    def _files(self) -> dict[str, Path]:
        by_id: dict[str, Path] = {}
        for d in self.dirs:
            if d.is_dir():
                for f in sorted(d.glob("*.yaml")):
                    by_id[f.stem] = f
        return by_id

    def _entry(self, path: Path) -> _Entry:
        st = path.stat()
        old = self._entries.get(path)
        if old is not None and (old.mtime_ns, old.size) == (st.st_mtime_ns, st.st_size):
            return old
        try:
            entry = _Entry(path, st.st_mtime_ns, st.st_size, load_persona(path, self._voices), None)
        except FileError as exc:
            kept = old.persona if old is not None else None
            entry = _Entry(path, st.st_mtime_ns, st.st_size, kept, exc)
            log.warning(
                "persona %s has problems%s:\n%s",
                path,
                " (keeping the last good version)" if kept else "",
                exc,
            )
        self._entries[path] = entry
        return entry

    def ids(self) -> list[str]:
        return sorted(self._files())

    def get(self, persona_id: str) -> Persona:
        """The current version of a persona; KeyError if unknown, FileError if it never loaded."""
        path = self._files().get(persona_id)
        if path is None:
            raise KeyError(
                f"unknown persona {persona_id!r}; known: {', '.join(self.ids()) or 'none'}"
            )
        entry = self._entry(path)
        if entry.persona is None:
            assert entry.error is not None
            raise entry.error
        return entry.persona

    def status(self) -> list[tuple[str, Path, Persona | None, FileError | None]]:
        """Every persona file in effect: id, path, the version in service, its current problems."""
        out = []
        for pid, path in sorted(self._files().items()):
            e = self._entry(path)
            out.append((pid, path, e.persona, e.error))
        return out
