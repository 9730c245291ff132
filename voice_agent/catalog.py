"""models/catalog.yaml: every embedded model, the package that carries it, its files and checksums.

This module reads and validates the catalog. Verifying files, joining split models and pointing
a role at your own file build on it (see `voice-agent models`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voice_agent import resources
from voice_agent.yamlfile import FileError, load_yaml

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileRef(_Model):
    path: str
    """Relative to the site-packages folder the package is installed in."""
    sha256: Sha256
    size: Annotated[int, Field(ge=0)]


class Part(FileRef):
    package: str
    version: str


class Joined(_Model):
    name: str
    sha256: Sha256
    size: Annotated[int, Field(ge=0)]


class ModelEntry(_Model):
    id: str
    role: Literal["asr", "llm", "tts", "vad", "turn"]
    engine: str
    runtime: str
    package: str
    version: str
    licence: str
    extra: str | None = None
    """The pip extra that installs it, when the default install does not."""
    sample_rate: int | None = None
    directory: str | None = None
    """For a model that is a folder of files (faster-whisper)."""
    voices: list[str] = []
    files: list[FileRef] = []
    parts: list[Part] = []
    joined: Joined | None = None


class Catalog(_Model):
    models: list[ModelEntry]

    def get(self, model_id: str) -> ModelEntry:
        for m in self.models:
            if m.id == model_id:
                return m
        raise KeyError(f"unknown model {model_id!r}; known: {', '.join(m.id for m in self.models)}")


def load_catalog(path: Path | None = None) -> Catalog:
    """Read and validate the catalog (FileError with lines on any problem)."""
    doc = load_yaml(path or resources.catalog_file())
    try:
        return Catalog.model_validate(doc.data)
    except ValidationError as err:
        raise FileError(doc.problems_from(err)) from None


class VoiceLike(Protocol):
    """What `VoiceCatalog.problems` reads of a persona's voice (see `persona.Voice`)."""

    @property
    def engine(self) -> str: ...
    @property
    def blend(self) -> Sequence[object] | None: ...
    @property
    def voice_ids(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class VoiceCatalog:
    """Voice ids each TTS engine knows."""

    voices: Mapping[str, frozenset[str]]

    def problems(self, voice: VoiceLike) -> list[tuple[str, str]]:
        """(field, reason) for each voice this catalog does not know, or cannot blend."""
        known = self.voices.get(voice.engine, frozenset())
        out = []
        for i, vid in enumerate(voice.voice_ids):
            if vid not in known:
                field = "voice.id" if voice.blend is None else f"voice.blend[{i}].id"
                hint = ", ".join(sorted(known)) or "none"
                out.append(
                    (field, f"unknown voice {vid!r} for engine {voice.engine} (known: {hint})")
                )
        if voice.blend is not None and voice.engine != "kokoro":
            out.append(("voice.blend", f"engine {voice.engine} cannot blend voices; use kokoro"))
        return out


@lru_cache(maxsize=1)
def voice_catalog() -> VoiceCatalog:
    """The voices of every TTS model in the shipped catalog."""
    voices: dict[str, frozenset[str]] = {}
    for m in load_catalog().models:
        if m.role == "tts":
            voices[m.engine] = voices.get(m.engine, frozenset()) | frozenset(m.voices)
    return VoiceCatalog(voices)
