"""What the turn-taking machines hear: the audio clock, and who is speaking.

Every position is a count of samples of the user's audio from the start of the session
(`Hearing.heard`): silence is counted in audio samples, not on a wall clock, so a decision
depends only on the audio (transports deliver audio continuously, silence included), however
fast it arrives and however it is cut into frames.

`TurnTaker` keeps one `Hearing` up to date from its inputs (audio, the VAD's onset, start and
pause, the assistant starting and stopping); the `Endpointer` and the `BargeInJudge` read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Hearing:
    """The audio clock and who is speaking on it (written by `TurnTaker` only)."""

    rate: int = 16000
    """Samples per second of the user's audio."""
    heard: int = 0
    """Samples of the user's audio so far: the clock."""
    speaking: bool = False
    """The VAD has the user speaking: started, and not paused since."""
    onset_at: int | None = None
    """Where (on the clock) a sound that may be speech began; None: no such sound going on."""
    bot_speaking: bool = False
    """The assistant's reply is being heard."""

    def samples(self, ms: int) -> int:
        """`ms` milliseconds, in samples."""
        return self.rate * ms // 1000

    def ms(self, samples: int) -> int:
        """`samples` samples, in whole milliseconds."""
        return 1000 * samples // self.rate

    @property
    def speech_samples(self) -> int:
        """How long the sound going on has lasted (0 if none)."""
        return 0 if self.onset_at is None else self.heard - self.onset_at
