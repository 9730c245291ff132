"""`bench models`' LLM load figures (voice_agent.bench.llm_load), on a fake streaming engine."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from voice_agent.backbone.base import GenerationParams
from voice_agent.bench import llm_load
from voice_agent.persona import PersonaStore


class SlowLLM:
    """Three pieces, 10 ms apart; remembers the conversations it was asked for."""

    def __init__(self) -> None:
        self.conversations: set[str | None] = set()

    async def astream(
        self, messages: Sequence[dict[str, str]], params: GenerationParams
    ) -> AsyncIterator[str]:
        self.conversations.add(params.conversation)
        for word in ("one ", "two ", "three"):
            await asyncio.sleep(0.01)
            yield word


def test_each_level_and_the_load_beside_other_engines() -> None:
    calls: collections.Counter[str] = collections.Counter()

    def work(name: str) -> Any:
        def call() -> None:
            calls[name] += 1
            time.sleep(0.002)

        return call

    llm = SlowLLM()
    persona = PersonaStore([]).get("concierge")
    figures = llm_load.run(
        llm, "fake", persona, ["hi?", "why?"], 4, 1000, beside=[work("asr"), work("tts")]
    )
    by = {f.metric: f for f in figures}
    for n in llm_load.STREAMS:
        assert len(by[f"llm first token, {n} at once"].samples) == 3 * n  # 3 rounds, n each
    beside = by["llm tokens/s summed, 4 at once beside ASR and TTS"]
    assert len(beside.samples) == 3 and all(0 < r < 3 * 4 / 0.03 for r in beside.samples)
    assert calls["asr"] > 5 and calls["tts"] > 5  # both ran throughout
    assert {f"beside-{i}" for i in range(llm_load.BESIDE)} <= llm.conversations
    frozen = dict(calls)
    time.sleep(0.05)
    assert dict(calls) == frozen  # and stopped with the figures
