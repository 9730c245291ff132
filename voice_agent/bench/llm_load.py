"""The LLM under concurrent load (part of `voice-agent bench models`).

For an engine that serves several conversations at once (`astream`: the default
`llama-server`): tokens per second summed over 1, 2, 4 and 8 replies streamed together, each
its own conversation, with the first-token latency at each level; and the first token of a new
turn whose conversation's prompt is in its slot's cache (the persona's head prefilled, then the
history of earlier turns) against a cold one (a prompt nothing has seen); and 4 replies at once
while ASR and TTS run in threads beside them, as in a busy server: how much the runtime loses
to sharing the cores (docs/scaling.md: `engines.llm.threads`).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from voice_agent.backbone.base import GenerationParams
from voice_agent.bench.figures import Figure
from voice_agent.history import History
from voice_agent.persona import Persona

STREAMS = (1, 2, 4, 8)
REPLY_TOKENS = 64
BESIDE = 4
"""Replies at once beside the other engines' work."""


async def _reply(
    llm: Any, messages: list[dict[str, str]], params: GenerationParams
) -> tuple[int, float, str]:
    """(pieces, first-piece ms, text) of one streamed reply."""
    t = time.perf_counter()
    pieces, first, text = 0, float("nan"), ""
    async for piece in llm.astream(messages, params):
        if pieces == 0:
            first = 1000 * (time.perf_counter() - t)
        pieces += 1
        text += piece
    return pieces, first, text


def _ask(persona: Persona, question: str, budget: int, history: History | None = None) -> Any:
    h = history or History()
    h.add_user(question)
    return h.prompt(persona, budget)


async def _round(
    llm: Any, persona: Persona, questions: list[str], budget: int, n: int, r: int, tag: str
) -> tuple[float, list[float]]:
    """`n` replies at once (round `r` of the questions), each its own conversation `tag-i`:
    tokens per second summed, and each reply's first-token ms."""
    jobs = [
        _reply(
            llm,
            _ask(persona, questions[(r + i) % len(questions)], budget),
            GenerationParams(max_tokens=REPLY_TOKENS, conversation=f"{tag}-{i}"),
        )
        for i in range(n)
    ]
    t = time.perf_counter()
    results = await asyncio.gather(*jobs)
    wall = time.perf_counter() - t
    return sum(p for p, _, _ in results) / wall, [f for _, f, _ in results]


async def _throughput(
    llm: Any, name: str, persona: Persona, questions: list[str], rounds: int, budget: int
) -> list[Figure]:
    figures: list[Figure] = []
    for n in STREAMS:
        rate = Figure(name, f"llm tokens/s summed, {n} at once", "tok/s")
        first = Figure(name, f"llm first token, {n} at once", "ms")
        for r in range(rounds + 1):
            tokens_s, firsts = await _round(llm, persona, questions, budget, n, r, f"load-{n}")
            if r == 0:
                continue  # warm-up: fills each conversation's slot with the persona's head
            rate.samples.append(tokens_s)
            first.samples += firsts
        figures += [rate, first]
    return figures


async def _cached_vs_cold(
    llm: Any, name: str, persona: Persona, questions: list[str], rounds: int, budget: int
) -> list[Figure]:
    cached = Figure(name, "llm first token, next turn cached", "ms")
    cold = Figure(name, "llm first token, prompt cold", "ms")
    for r in range(rounds):
        conversation = f"turns-{r}-{secrets.token_hex(4)}"
        params = GenerationParams(max_tokens=24, conversation=conversation)
        history = History()
        history.add_user(questions[r % len(questions)])
        _, _, said = await _reply(llm, history.prompt(persona, budget), params)
        history.add_assistant(said.strip() or "Sure.")
        history.add_user(questions[(r + 1) % len(questions)])
        cached.samples.append((await _reply(llm, history.prompt(persona, budget), params))[1])
        nonce = persona.model_copy(  # a head no slot has seen: everything is evaluated
            update={"system_prompt": f"[{secrets.token_hex(8)}] {persona.system_prompt}"}
        )
        p = GenerationParams(max_tokens=8, conversation=f"cold-{conversation}")
        cold.samples.append(
            (await _reply(llm, _ask(nonce, questions[r % len(questions)], budget), p))[1]
        )
    return [cached, cold]


async def _beside(
    llm: Any,
    name: str,
    persona: Persona,
    questions: list[str],
    rounds: int,
    budget: int,
    work: Sequence[Callable[[], object]],
) -> list[Figure]:
    """`BESIDE` replies at once while each of `work` (ASR, TTS) runs again and again in a
    thread of its own: the cores shared as they are in a busy server."""
    rate = Figure(name, f"llm tokens/s summed, {BESIDE} at once beside ASR and TTS", "tok/s")
    first = Figure(name, f"llm first token, {BESIDE} at once beside ASR and TTS", "ms")
    stop = threading.Event()

    def loop(call: Callable[[], object]) -> None:
        while not stop.is_set():
            call()

    threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in work]
    for t in threads:
        t.start()
    try:
        for r in range(rounds):
            tokens_s, firsts = await _round(llm, persona, questions, budget, BESIDE, r, "beside")
            rate.samples.append(tokens_s)
            first.samples += firsts
    finally:
        stop.set()
        for t in threads:
            await asyncio.to_thread(t.join)
    return [rate, first]


def run(
    llm: Any,
    name: str,
    persona: Persona,
    questions: list[str],
    repeats: int,
    budget: int,
    beside: Sequence[Callable[[], object]] = (),
) -> list[Figure]:
    """The figures above for `llm` (which must have `astream`); with `beside` (calls of other
    engines), also `BESIDE` replies at once while those run in a loop."""

    async def all_of_them() -> list[Figure]:
        rounds = max(repeats // 4, 3)
        figures = [
            *await _throughput(llm, name, persona, questions, rounds, budget),
            *await _cached_vs_cold(llm, name, persona, questions, rounds * 2, budget),
        ]
        if beside:
            figures += await _beside(llm, name, persona, questions, rounds, budget, beside)
        return figures

    return asyncio.run(all_of_them())
