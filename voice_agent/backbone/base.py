"""The engine protocols. Engines are plain synchronous model code with explicit streaming state;
stages call them through `voice_agent.executor.EngineExecutor`, never on the event loop."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from voice_agent.frames import PCM
from voice_agent.persona import Voice


class ASRStream(Protocol):
    """The streaming state of one utterance (one per session at a time; engines are shared)."""

    def accept(self, pcm: PCM) -> None:
        """Append audio of the utterance (cheap: no decoding here)."""

    def partial(self) -> str:
        """Transcript of what has been heard so far (may change as more audio arrives)."""

    def finalize(self) -> str:
        """Final transcript of the utterance, reusing what `partial` already decoded."""


class ASREngine(Protocol):
    """Speech to text; the model is shared, each utterance gets its own stream."""

    sample_rate: int

    def stream(self) -> ASRStream:
        """A new, empty utterance (cheap: no model work here)."""


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int = 160
    temperature: float = 0.6
    top_p: float = 0.9
    repeat_penalty: float = 1.15
    stop: tuple[str, ...] = ()
    conversation: str | None = None
    """Which conversation asks (a session's id): an engine that serves several at once keeps
    each one's prompt cache apart by it; others ignore it."""


class LLMEngine(Protocol):
    """Chat completion, streamed piece by piece."""

    def stream(self, messages: Sequence[dict[str, str]], params: GenerationParams) -> Iterator[str]:
        """Yield the reply in pieces; closing the iterator stops generation."""


class TTSEngine(Protocol):
    """Text to speech, one chunk of text at a time."""

    sample_rate: int

    def synthesize(self, text: str, voice: Voice) -> PCM:
        """Audio for `text` (already normalised for speech)."""
