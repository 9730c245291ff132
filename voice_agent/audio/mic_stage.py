"""`MicAudioStage`: the base of the stages that clean the microphone audio at one sample rate
(echo cancellation, noise suppression)."""

from __future__ import annotations

import logging

from voice_agent.frames import Direction, Frame, InputAudioFrame
from voice_agent.pipeline import Stage

log = logging.getLogger(__name__)


class MicAudioStage(Stage):
    """Hands each `InputAudioFrame` at `sample_rate` to `clean`, which returns the frame to
    pass on, or None to drop it (nothing ready yet). Audio at another rate passes through
    unchanged, with one warning; every other frame passes through untouched."""

    sample_rate: int
    worker = "processor"
    """What does the cleaning, for the warning ("the canceller works at 16000 Hz")."""
    kept = "noise"
    """What audio at another rate keeps, for the warning ("passed through with its echo")."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self._warned = False

    def clean(self, frame: InputAudioFrame) -> InputAudioFrame | None:
        raise NotImplementedError

    async def process(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, InputAudioFrame):
            if frame.sample_rate != self.sample_rate:
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "%s: microphone audio at %d Hz, the %s works at %d Hz: "
                        "passed through with its %s",
                        self.name,
                        frame.sample_rate,
                        self.worker,
                        self.sample_rate,
                        self.kept,
                    )
            else:
                cleaned = self.clean(frame)
                if cleaned is None:
                    return
                frame = cleaned
        await self.push(frame, direction)
