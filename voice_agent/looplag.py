"""How late the event loop runs what is due: the figure that says a process is past its CPU.

A task sleeps `INTERVAL_S` again and again; how much later than asked it wakes is the loop's
lag. A callback that blocks, threads that hold the GIL, or cores busy with other work all show
up in it. Audio frames, WebRTC's consent checks and every timer wait that long on top of their
own work: past a few hundred milliseconds, callers hear gaps and peers time out. The server
keeps one (`/metrics`: `voice_agent_event_loop_lag_seconds`; `/healthz`: `loop_lag_ms` over
the last minute); the benchmarks keep one for the simulated callers, whose lag is in their
figures too.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

import numpy as np

INTERVAL_S = 0.1
WINDOW_S = 60.0


class LoopLag:
    """The lag of the running loop, sampled every `INTERVAL_S` while `run()` runs; the last
    `window_s` of samples are kept (bounded: `window_s / INTERVAL_S` of them)."""

    def __init__(
        self, window_s: float = WINDOW_S, on_sample: Callable[[float], None] | None = None
    ) -> None:
        self.samples: collections.deque[float] = collections.deque(
            maxlen=max(1, round(window_s / INTERVAL_S))
        )
        """Lag in seconds, oldest first."""
        self.on_sample = on_sample

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            start = time.monotonic()
            await asyncio.sleep(INTERVAL_S)
            lag = max(0.0, time.monotonic() - start - INTERVAL_S)
            self.samples.append(lag)
            if self.on_sample is not None:
                self.on_sample(lag)

    def summary_ms(self) -> dict[str, float]:
        """Median, p95 and max of the kept samples, in ms (empty before the first sample)."""
        if not self.samples:
            return {}
        ms = 1000.0 * np.asarray(self.samples)
        return {
            "p50": round(float(np.median(ms)), 1),
            "p95": round(float(np.percentile(ms, 95)), 1),
            "max": round(float(ms.max()), 1),
        }
