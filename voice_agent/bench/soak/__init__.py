"""`voice-agent bench soak`: sessions opened and closed for a while, every way a session can end;
then the server must come back to where it was before the load.

`--sessions N` simulated callers (`bench/caller.py`) run at once, each starting session after
session until `--duration` is over. Session n takes the n-th (transport, behaviour) pair of a
round robin over every transport (WebRTC on `/ws`, `/pcm`, the OpenAI Realtime API on
`/v1/realtime`) and every behaviour:

- `turn`: ask a question, hear the whole reply, say `bye` (Realtime: close) and leave;
- `barge-in`: ask for a long reply, talk over it once it is audible, wait for `interrupted`;
- `abrupt`: once the reply is audible, drop the socket without a word (a TCP abort); a WebRTC
  caller leaves its peer connection open until the server has closed its own side (DTLS
  shutdown), then closes it, so the bench itself leaks nothing;
- `idle`: connect, stay silent for a few seconds, leave.

A sampler scrapes the server's `/metrics` every second: open sessions, asyncio tasks, threads,
file descriptors, live peer connections and RSS (docs/soak.md). The baseline is taken once a
warm-up session per transport is over and the counts have settled; after the load, each count
must come back to its baseline (plus `SLACK`) within `settle_s`. A session that raised is a
failure, reported with what it was doing, never hidden.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

from voice_agent.bench import Progress
from voice_agent.bench.script import Lines, voice_script
from voice_agent.bench.server import bench_server
from voice_agent.bench.soak.gauges import GAUGES, Sampler, scrape
from voice_agent.bench.soak.report import COUNTS, SoakReport, Verdict, allowed
from voice_agent.bench.soak.sessions import BEHAVIOURS, TRANSPORTS, bounded, one_session
from voice_agent.config import Settings

__all__ = [
    "BEHAVIOURS",
    "COUNTS",
    "DEFAULT_WORKERS",
    "GAUGES",
    "TRANSPORTS",
    "SoakReport",
    "Verdict",
    "allowed",
    "run",
    "scrape",
]

DEFAULT_WORKERS = 4
SETTLE_S = 30.0


async def _settled(sampler: Sampler, within_s: float) -> dict[str, Any]:
    """Sample until no session is open and two samples in a row agree on every count."""
    deadline = time.monotonic() + within_s
    last: dict[str, Any] = {}
    while True:
        row = await sampler.sample()
        same = all(row.get(k) == last.get(k) for k in COUNTS)
        if (same and not row.get("sessions")) or time.monotonic() > deadline:
            return row
        last = row
        await asyncio.sleep(sampler.every_s)


async def _drain(
    sampler: Sampler, baseline: dict[str, Any], within_s: float
) -> tuple[dict[str, Any], float | None]:
    """Sample until every count is back to its baseline (plus slack): the last sample, and how
    long it took (None: not within `within_s`)."""
    t0 = time.monotonic()
    while True:
        row = await sampler.sample()
        back = all(
            row[k] <= baseline[k] + allowed(k, baseline, row)
            for k in COUNTS
            if k in row and k in baseline
        )
        if back:
            return row, round(time.monotonic() - t0, 1)
        if time.monotonic() - t0 > within_s:
            return row, None
        await asyncio.sleep(sampler.every_s)


async def run(
    settings: Settings,
    *,
    url: str | None,
    sessions: int,
    duration_s: float,
    argv: Sequence[str],
    progress: Progress,
    transports: Sequence[str] = TRANSPORTS,
    behaviours: Sequence[str] = BEHAVIOURS,
    idle_s: float = 3.0,
    limit: int | None = None,
    settle_s: float = SETTLE_S,
    every_s: float = 1.0,
    persona: str | None = None,
    lines: Lines | None = None,
) -> SoakReport:
    """Soak the server at `url` (None: start one with `argv`): `sessions` callers at once for
    `duration_s` (and at most `limit` sessions), sessions taking the (transport, behaviour)
    pairs in turn; `behaviours` may repeat one to weigh it. `lines`: the speech (default: the
    benches' script, voiced by the project's TTS)."""
    if lines is None:
        lines = await voice_script(settings, progress)
    plan = [(t, b) for b in behaviours for t in transports]
    report = SoakReport(workers=sessions, duration_s=duration_s)
    kw = {"persona": persona} if persona is not None else {}
    async with bench_server(url, argv, progress, "soak", sessions) as served:
        progress(f"warm-up: one turn over each of {', '.join(transports)}")
        for t in transports:
            try:
                await bounded(one_session(served.url, t, "turn", lines, 0, idle_s, **kw))
            except Exception as exc:
                raise RuntimeError(f"the warm-up turn over {t} failed: {exc!r}") from exc
        sampler = Sampler(served.url, every_s)
        baseline = await _settled(sampler, settle_s)
        progress(f"{sessions} callers at once for {duration_s:g} s over {', '.join(transports)}")
        sampler.phase = "load"
        deadline, counter = time.monotonic() + duration_s, itertools.count()

        async def worker() -> None:
            while time.monotonic() < deadline:
                n = next(counter)
                if limit is not None and n >= limit:
                    return
                transport, behaviour = plan[n % len(plan)]
                report.started[(transport, behaviour)] += 1
                try:
                    await bounded(
                        one_session(served.url, transport, behaviour, lines, n, idle_s, **kw)
                    )
                except Exception as exc:
                    report.fail(transport, behaviour, exc)

        t0 = time.monotonic()
        sampler.start()
        try:
            await asyncio.gather(*(worker() for _ in range(sessions)))
        finally:
            await sampler.cancel_tasks()
        report.load_s = time.monotonic() - t0
        progress(f"{report.sessions} sessions done; waiting up to {settle_s:g} s for baseline")
        sampler.phase = "after"
        after, report.settled_s = await _drain(sampler, baseline, settle_s)
    report.series = list(sampler.series)
    report.scrape_errors = sampler.scrape_errors
    report.judge(baseline, after)
    return report
