"""One simulated user going through the conversation script on a server, measuring it from the
audio (see `voice_agent.bench.conversation` for what each figure means)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voice_agent.audio.pcm import dbfs
from voice_agent.bench.caller import Caller
from voice_agent.bench.mic import Said
from voice_agent.bench.script import PAUSE_S, RATE, Line, Lines, trimmed

SCRIPT = ("question", "pause", "barge-in", "question", "backchannel")
PACES: dict[str, tuple[float, float]] = {"back-to-back": (0.0, 0.0), "human": (1.0, 3.0)}
"""Silence between the end of a reply and the user's next turn: none, or 1-3 s (a person who
listens to the end, then thinks)."""


@dataclass(slots=True)
class Result:
    """What one simulated user measured."""

    v2v_ms: list[float] = field(default_factory=list)
    server_v2v_ms: list[float] = field(default_factory=list)
    server_turns: list[dict[str, Any]] = field(default_factory=list)
    """The server's `turn_metrics` of the measured turns: where its time went."""
    barge_ms: list[float] = field(default_factory=list)
    cut: list[float] = field(default_factory=list)
    kept: list[float] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    """Turns that got no reply (or no measurable one), and why."""
    behind_ms: list[float] = field(default_factory=list)
    """How far the reply audio fell behind at worst (`Caller.behind_s`), where measured."""


async def _out(caller: Caller, said: Said) -> None:
    """Until `said` has all gone out; ConnectionError if the server ends the session first
    (then the mic is no longer heard, and would never finish)."""
    while not said.done.is_set():
        if caller.lost is not None:
            raise ConnectionError(caller.lost)
        await asyncio.sleep(0.02)


async def _quiet(caller: Caller, quiet_s: float = 0.5, within_s: float = 60) -> None:
    """Until the reply is over, as a person would tell: the assistant says it is listening
    again, and no reply audio has arrived for `quiet_s` (a pause between two sentences of a
    reply, while the next one is being made, is not the end of it)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        states = [e["state"] for e in caller.events if e.get("type") == "state"]
        last = next((h.at for h in reversed(caller.heard) if dbfs(h.pcm) > -40), 0.0)
        if states[-1:] in ([], ["listening"]) and time.monotonic() - last >= quiet_s:
            return
        await asyncio.sleep(0.05)


async def _server_metrics(caller: Caller, after: int) -> dict[str, Any] | None:
    with contextlib.suppress(TimeoutError):
        return await caller.wait_for("turn_metrics", within_s=3, after=after)
    return None


async def _question(caller: Caller, q: Line, r: Result) -> None:
    mark = len(caller.events)
    said = caller.say(q.pcm, RATE, "question")
    await _out(caller, said)
    end = said.started + q.last / RATE
    heard = await caller.audible_after(end, 30)
    if heard is None:
        r.missed.append("question: no reply within 30 s")
        return
    r.v2v_ms.append(1000 * (heard - end))
    server = await _server_metrics(caller, mark)
    if server is not None and isinstance(server.get("voice_to_voice_ms"), int | float):
        r.server_v2v_ms.append(float(server["voice_to_voice_ms"]))
        r.server_turns.append(server)


async def _pause(caller: Caller, halves: tuple[Line, Line], r: Result) -> None:
    first, second = halves
    began = caller.say(trimmed(first, RATE), RATE, "first half")
    caller.say(np.zeros(int(PAUSE_S * RATE), np.int16), RATE, "pause")
    said = caller.say(trimmed(second, RATE), RATE, "second half")
    await _out(caller, said)
    paused_at, end = began.ended - 0.02, said.ended - 0.02
    early = caller.first_audible(paused_at)  # a reply that came before they had finished
    r.cut.append(float(early is not None and early < end))
    if await caller.audible_after(paused_at, 30) is None:
        r.missed.append("paused sentence: no reply within 30 s")


async def _over_reply(caller: Caller, ask: Line, over: Line, barge: bool, r: Result) -> None:
    said = caller.say(ask.pcm, RATE, "ask")
    await _out(caller, said)
    heard = await caller.audible_after(said.started + ask.last / RATE, 30)
    if heard is None:
        r.missed.append("long reply: no reply within 30 s")
        return
    await asyncio.sleep(max(0.0, heard + 1.2 - time.monotonic()))
    before = [dbfs(h.pcm) for h in caller.heard if h.at >= heard + 0.2]
    level = float(np.median([d for d in before if d > -40] or [-40.0]))
    mark = len(caller.events)
    words = caller.say(over.pcm, RATE, "barge-in" if barge else "backchannel")
    await _out(caller, words)
    onset = words.started + over.first / RATE
    if barge:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            down = next(
                (h.at for h in caller.heard if h.at > onset and dbfs(h.pcm) <= level - 20), None
            )
            if down is not None:
                r.barge_ms.append(1000 * (down - onset))
                break
            await asyncio.sleep(0.02)
        else:
            r.missed.append("barge-in: the reply did not go 20 dB down within 3 s")
    else:
        await asyncio.sleep(1.0)
        cut = any(e.get("type") == "interrupted" for e in caller.events[mark:])
        still = caller.first_audible(words.ended + 0.3) is not None
        r.kept.append(float(not cut and still))


async def simulate(
    caller: Caller, lines: Lines, turns: int, seed: int, pace: str = "back-to-back"
) -> Result:
    """One user going through `turns` turns of the script, `pace` apart (`PACES`)."""
    r = Result()
    rng = np.random.default_rng(seed)
    await caller.greeted()  # the persona's greeting is not part of the script
    try:
        await _script(caller, lines, turns, seed, pace, rng, r)
    except ConnectionError as exc:  # measured so far, kept; the rest is missed
        r.missed.append(f"session lost: {exc}")
    return r


async def _script(
    caller: Caller,
    lines: Lines,
    turns: int,
    seed: int,
    pace: str,
    rng: np.random.Generator,
    r: Result,
) -> None:
    for i in range(turns):
        if i:
            await asyncio.sleep(float(rng.uniform(*PACES[pace])))
        k = seed + i
        scenario = SCRIPT[i % len(SCRIPT)]
        if scenario == "question":
            await _question(caller, lines.questions[k % len(lines.questions)], r)
        elif scenario == "pause":
            await _pause(caller, lines.halves[k % len(lines.halves)], r)
        else:
            barge = scenario == "barge-in"
            over = (lines.barge_ins if barge else lines.backchannels)[k % 2]
            await _over_reply(caller, lines.asks[k % len(lines.asks)], over, barge, r)
        await _quiet(caller)
