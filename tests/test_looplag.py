"""The event loop's lag (voice_agent.looplag): a loop held up shows, a free one does not."""

from __future__ import annotations

import asyncio
import time

from voice_agent.looplag import INTERVAL_S, LoopLag
from voice_agent.tasks import TaskOwner


async def test_a_blocked_loop_shows_as_lag_and_the_window_is_bounded() -> None:
    seen: list[float] = []
    lag, owner = LoopLag(window_s=1.0, on_sample=seen.append), TaskOwner("test")
    assert lag.summary_ms() == {}
    owner.create_task(lag.run(), "lag")
    await asyncio.sleep(0.55)
    asyncio.get_running_loop().call_soon(time.sleep, 0.3)  # a callback that blocks the loop
    await asyncio.sleep(0.35)
    await owner.cancel_tasks()
    summary = lag.summary_ms()
    assert summary["max"] >= 190 and summary["p50"] < 100  # 300 ms less what was due anyway
    assert len(seen) >= 6 and max(seen) >= 0.19  # every sample went to the observer too
    assert lag.samples.maxlen == round(1.0 / INTERVAL_S)
