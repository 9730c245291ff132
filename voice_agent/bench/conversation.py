"""`voice-agent bench conversation`: simulated people talking to a server, measured from outside.

Each simulated user is a real client over a real transport (`WebRTCCaller`, the default,
`PcmCaller` or `RealtimeCaller` on the OpenAI Realtime API), talking in real time with speech
made by the project's own TTS. It goes through a script, turn after turn: a plain question; a
sentence with a 600 ms pause in the middle; a request for a long reply that it interrupts
("Wait, stop..."); and a long reply over which it says "uh-huh". N users talk at once, each in
its own session.

Everything is measured at the client, from the audio itself, on one monotonic clock:
- voice-to-voice: the last audible sample of the user's speech as it was sent -> the first
  reply sample above -40 dBFS as it arrived. Beside it, the server's own figure for the same
  turn (`turn_metrics.voice_to_voice_ms`, from its VAD's end of speech to its first frame sent):
  the difference is what the transport and the measuring points add.
- barge-in reaction: the first audible sample of the interruption as sent -> the first 20 ms of
  reply that arrived at least 20 dB below the reply's level before it.
- false cut-offs: the reply became audible during the mid-sentence pause or before the sentence
  was finished; backchannels: the reply went on after the "uh-huh".
- CPU: the server process's CPU time over the run (in cores), when this command started it.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voice_agent.bench import Progress
from voice_agent.bench.caller import CALLERS
from voice_agent.bench.figures import Figure, NoPlot, pyplot
from voice_agent.bench.script import Lines, voice_script
from voice_agent.bench.server import Served, bench_server, cpu_seconds
from voice_agent.bench.simulated_user import Result, simulate
from voice_agent.config import Settings
from voice_agent.looplag import LoopLag
from voice_agent.tasks import TaskOwner
from voice_agent.timeline import STAGES

BEHIND_WARN_MS = 500.0
"""Reply audio this far behind the clock makes the run say so."""


@dataclass(slots=True)
class Outcome:
    """What a run of N simulated users gave."""

    results: list[Result]
    failures: list[str]
    wall_s: float
    server_cores: float | None
    client_cores: float
    client_lag_ms: list[float]
    """The simulated callers' event loop lag (voice_agent.looplag), every 100 ms of the run."""


async def run_users(
    served: Served,
    lines: Lines,
    *,
    sessions: int,
    turns: int,
    transport: str,
    persona: str | None = None,
    pace: str = "back-to-back",
    progress: Progress = lambda _: None,
) -> Outcome:
    """`sessions` simulated users at once on a running server, each through `turns` turns;
    `progress` hears of users that failed and of reply audio that fell behind."""
    connect = CALLERS[transport].connect

    async def one(i: int) -> Result:
        async with await connect(served.url, persona) as caller:
            result = await simulate(caller, lines, turns, seed=i, pace=pace)
            if caller.behind_s is not None:
                result.behind_ms.append(1000.0 * caller.behind_s)
            return result

    cpu0 = cpu_seconds(served.pid) if served.pid else None
    client0, t0 = time.process_time(), time.monotonic()
    lag, watcher = LoopLag(window_s=24 * 3600.0), TaskOwner("bench")
    watcher.create_task(lag.run(), "loop-lag")
    try:
        outcomes = await asyncio.gather(*(one(i) for i in range(sessions)), return_exceptions=True)
    finally:
        await watcher.cancel_tasks()
    wall = time.monotonic() - t0
    server_cores = (
        (cpu_seconds(served.pid) - cpu0) / wall if served.pid and cpu0 is not None else None
    )
    results = [o for o in outcomes if isinstance(o, Result)]
    failures = [f"{type(o).__name__}: {o}" for o in outcomes if not isinstance(o, Result)]
    for failure in failures:
        progress(f"a simulated user failed: {failure}")
    behind = max((ms for r in results for ms in r.behind_ms), default=0.0)
    if behind > BEHIND_WARN_MS:
        progress(
            f"the reply audio fell {behind / 1000:.1f} s behind the clock: the machine (the "
            "server, or these simulated callers beside it) is past what it holds, and the "
            "figures include that backlog"
        )
    return Outcome(
        results,
        failures,
        wall,
        server_cores,
        (time.process_time() - client0) / wall,
        [1000.0 * x for x in lag.samples],
    )


async def run(
    settings: Settings,
    *,
    url: str | None,
    sessions: int,
    turns: int,
    transport: str,
    argv: Sequence[str],
    progress: Progress,
    persona: str | None = None,
    pace: str = "back-to-back",
) -> tuple[list[Figure], dict[str, Any]]:
    """Run the script with `sessions` users at once; the figures, and the details for JSON."""
    lines = await voice_script(settings, progress)
    async with bench_server(url, argv, progress, "bench", sessions) as served:
        progress(f"{sessions} simulated users x {turns} turns over {transport}, in real time")
        out = await run_users(
            served,
            lines,
            sessions=sessions,
            turns=turns,
            transport=transport,
            persona=persona,
            pace=pace,
            progress=progress,
        )
    return figures_of(out, sessions, transport), details_of(
        out, sessions, turns, transport, persona
    )


def figures_of(out: Outcome, sessions: int, transport: str) -> list[Figure]:
    """The figures of one run."""
    name = f"{sessions} x {transport}"

    def every(pick: Callable[[Result], list[Any]]) -> list[Any]:
        return [x for r in out.results for x in pick(r)]

    v2v = Figure(name, "voice-to-voice, at the client", "ms", every(lambda r: r.v2v_ms))
    v2v.target, v2v.p95_target = (300.0, 500.0) if sessions == 1 else (None, 800.0)
    figures = [
        v2v,
        Figure(name, "voice-to-voice, server's report", "ms", every(lambda r: r.server_v2v_ms)),
        *[
            Figure(name, f"  server: {stage.replace('_', ' ')}", "ms", samples)
            for stage in STAGES[:-1]
            if (
                samples := [
                    t[f"{stage}_ms"]
                    for t in every(lambda r: r.server_turns)
                    if isinstance(t.get(f"{stage}_ms"), int | float)
                ]
            )
        ],
        Figure(
            name,
            "barge-in: onset -> reply 20 dB down",
            "ms",
            every(lambda r: r.barge_ms),
            p95_target=100.0,
        ),
        Figure(name, "false cut-offs", "share", every(lambda r: r.cut), 0.05, share=True),
        Figure(name, "backchannels kept", "share", every(lambda r: r.kept), share=True),
        Figure(name, "client CPU", "cores", [out.client_cores]),
        Figure(name, "simulated callers' event loop lag", "ms", out.client_lag_ms),
        Figure(name, "reply audio behind the clock, worst", "ms", every(lambda r: r.behind_ms)),
    ]
    if out.server_cores is not None:
        figures.append(Figure(name, "server CPU", "cores", [out.server_cores]))
    return figures


def details_of(
    out: Outcome, sessions: int, turns: int, transport: str, persona: str | None
) -> dict[str, Any]:
    """What JSON keeps of one run beside its figures."""
    turns_seen = [t for r in out.results for t in r.server_turns]
    return {
        "sessions": sessions,
        "turns_per_session": turns,
        "transport": transport,
        "persona": persona,
        "wall_s": round(out.wall_s, 1),
        "end_of_turn_reasons": dict(collections.Counter(str(t.get("reason")) for t in turns_seen)),
        "missed": [m for r in out.results for m in r.missed],
        "failures": out.failures,
    }


def plot(figures: list[Figure], title: str, path: Path) -> None:
    """A PNG of the latency figures' distributions; NoPlot says why not."""
    plt = pyplot()
    shown = [f for f in figures if f.unit == "ms" and f.samples]
    if not shown:
        raise NoPlot("no latency was measured")
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 2.2 * len(shown) + 0.6), squeeze=False)
    for ax, f in zip(axes[:, 0], shown, strict=True):
        ax.hist(f.samples, bins=min(30, max(5, len(f.samples))), color="#d9480f", alpha=0.8)
        ax.axvline(f.median, color="#222", linestyle="-", label=f"p50 {f.median:.0f} ms")
        ax.axvline(f.p95, color="#222", linestyle="--", label=f"p95 {f.p95:.0f} ms")
        for target in (f.target, f.p95_target):
            if target is not None:
                ax.axvline(target, color="#2b8a3e", linestyle=":", label=f"target {target:g} ms")
        ax.set_title(f.metric, fontsize=10, loc="left")
        ax.set_xlabel("ms")
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
