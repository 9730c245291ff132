"""`voice-agent bench capacity`: how many callers one server holds on this machine.

The conversation script (bench/conversation.py) with N simulated users at once, for each N of
`--sessions` (default 1, 2, 4, 8) in turn, on one server: at a human pace (each user waits for
the reply to end, then 1-3 s before the next turn) and back-to-back (no pause). Per N:
voice-to-voice at the client (median, p95), barge-in reaction, and the server's LLM first token
and first audio. The knee is the most sessions whose voice-to-voice p95 stays within
`KNEE_P95_MS` at a human pace: `server.max_sessions` follows from it (docs/scaling.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from voice_agent.bench import Progress
from voice_agent.bench.conversation import details_of, figures_of, run_users
from voice_agent.bench.figures import Figure, NoPlot, pyplot
from voice_agent.bench.script import voice_script
from voice_agent.bench.server import bench_server
from voice_agent.config import Settings

KNEE_P95_MS = 1500.0
COUNTS = (1, 2, 4, 8)
KEPT = (
    "voice-to-voice, at the client",
    "barge-in: onset -> reply 20 dB down",
    "  server: llm first token",
    "  server: first audio",
    "server CPU",
)


async def run(
    settings: Settings,
    *,
    url: str | None,
    counts: Sequence[int],
    turns: int,
    transport: str,
    argv: Sequence[str],
    progress: Progress,
    persona: str | None = None,
    paces: Sequence[str] = ("human", "back-to-back"),
) -> tuple[list[Figure], dict[str, Any]]:
    """Every (pace, N) in turn on one server; the figures and, per pace, the knee."""
    lines = await voice_script(settings, progress)
    figures: list[Figure] = []
    runs: list[dict[str, Any]] = []
    knees: dict[str, int] = {}
    async with bench_server(url, argv, progress, "bench", max(counts)) as served:
        for pace in paces:
            for n in counts:
                progress(f"{n} users x {turns} turns over {transport}, {pace}")
                out = await run_users(
                    served,
                    lines,
                    sessions=n,
                    turns=turns,
                    transport=transport,
                    persona=persona,
                    pace=pace,
                    progress=progress,
                )
                got = [f for f in figures_of(out, n, transport) if f.metric in KEPT]
                for f in got:
                    f.engine = f"{n} x {transport}, {pace}"
                    f.target = None
                    if f.metric == KEPT[0]:
                        f.p95_target = KNEE_P95_MS
                        if pace == "human" and f.samples and f.p95 <= KNEE_P95_MS:
                            knees[pace] = max(knees.get(pace, 0), n)
                figures += got
                runs.append({"pace": pace, **details_of(out, n, turns, transport, persona)})
    return figures, {
        "runs": runs,
        "paces": list(paces),
        "knee_p95_ms": KNEE_P95_MS,
        "knee_sessions": knees,
    }


def plot(figures: list[Figure], title: str, path: Path) -> None:
    """Voice-to-voice (p50, p95) against sessions, a line per pace; NoPlot says why not."""
    plt = pyplot()
    series: dict[str, list[tuple[int, float, float]]] = {}
    for f in figures:
        if f.metric == KEPT[0] and f.samples:
            n, _, pace = f.engine.partition(", ")
            series.setdefault(pace, []).append((int(n.split()[0]), f.median, f.p95))
    if not series:
        raise NoPlot("no voice-to-voice was measured")
    fig, ax = plt.subplots(figsize=(7, 4))
    for (pace, points), color in zip(series.items(), ("#d9480f", "#1971c2"), strict=False):
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] for p in points], "o-", color=color, label=f"{pace}: p50")
        ax.plot(xs, [p[2] for p in points], "o--", color=color, label=f"{pace}: p95")
    ax.axhline(KNEE_P95_MS, color="#2b8a3e", linestyle=":", label=f"{KNEE_P95_MS:g} ms")
    ax.set_xlabel("sessions at once")
    ax.set_ylabel("voice-to-voice at the client, ms")
    ax.set_xscale("log", base=2)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
