"""The session clock: what every part of a session's record is placed on.

Time since the session began, on the monotonic clock, counted in samples at 16 kHz (the
recording) or in milliseconds (the transcript). Events carry their monotonic time (`t_ns`);
audio is placed where it crossed the transport (`voice_agent.records.audio`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

RATE = 16000
"""The recording's rate, the pipeline's."""


class SessionClock:
    """Samples and milliseconds since the session began."""

    def __init__(self, now: Callable[[], float] = time.monotonic, rate: int = RATE) -> None:
        self._now = now
        self.rate = rate
        self.t0 = now()
        """When the session began (monotonic s)."""

    def samples(self) -> int:
        """Where the session is now, in samples."""
        return round((self._now() - self.t0) * self.rate)

    def ms_of(self, t_ns: int) -> float:
        """A monotonic time (ns, as events carry it) in ms since the session began."""
        return round(t_ns / 1e6 - self.t0 * 1000, 1)
