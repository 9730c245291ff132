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
import contextlib
import itertools
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from voice_agent.bench.caller import Caller, WebRTCCaller
from voice_agent.bench.conversation import (
    CALLERS,
    RATE,
    Lines,
    Progress,
    bench_server,
    voice_script,
)
from voice_agent.config import Settings
from voice_agent.tasks import TaskOwner

log = logging.getLogger(__name__)

TRANSPORTS = ("webrtc", "pcm", "realtime")
BEHAVIOURS = ("turn", "barge-in", "abrupt", "idle")
DEFAULT_WORKERS = 4
GAUGES = {
    "sessions": "voice_agent_sessions_active",
    "tasks": "voice_agent_process_tasks",
    "threads": "voice_agent_process_threads",
    "pool_threads": "voice_agent_process_pool_threads",
    "fds": "voice_agent_process_open_fds",
    "peer_connections": "voice_agent_peer_connections",
    "rss_bytes": "voice_agent_process_rss_bytes",
}
"""What the sampler keeps, by the server's metric names."""
COUNTS = ("sessions", "tasks", "threads", "fds", "peer_connections")
"""The gauges that must come back to their baseline (pool threads and RSS are reported)."""
SLACK = {"sessions": 0, "tasks": 0, "threads": 0, "fds": 0, "peer_connections": 0}
"""How far above its baseline a count may stay and still have come back (docs/soak.md);
`threads` may also keep the thread-pool workers started meanwhile (`allowed`)."""
SETTLE_S = 30.0
SESSION_TIMEOUT_S = 120.0
"""Longest one session may take, all of it; past that it is a failure."""
REPLY_WITHIN_S = 60.0
INTERRUPTED_WITHIN_S = 10.0
PEER_NOTICE_S = 15.0
"""How long the server may take to close its side of an abandoned peer connection."""
MAX_SAMPLES = 24 * 3600
MAX_FAILURES_KEPT = 100
MAX_METRICS_BYTES = 4 << 20


# --- sampling ---------------------------------------------------------------------------------


def parse_gauges(text: str) -> dict[str, float]:
    """The `GAUGES` found in a Prometheus text exposition, by their short names."""
    short = {name: key for key, name in GAUGES.items()}
    return {
        short[s.name]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in short
    }


async def scrape(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """`GET /metrics` of the server at `url` (ws://host:port), parsed by `parse_gauges`.
    Plain asyncio, no thread: the server may run in this very process (tests), and a thread
    of ours would be counted as one of its own."""
    parts = urlsplit(url)
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        try:
            request = f"GET /metrics HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
            writer.write(request.encode("ascii"))
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            if head[0].split(" ")[1:2] != ["200"]:
                raise ConnectionError(f"GET /metrics answered {head[0]!r}")
            sizes = [h.split(":", 1)[1] for h in head if h.lower().startswith("content-length:")]
            length = int(sizes[0]) if sizes else -1
            if not 0 <= length <= MAX_METRICS_BYTES:
                raise ValueError(f"/metrics has a Content-Length of {length}")
            body = await reader.readexactly(length)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return parse_gauges(body.decode("utf-8"))


class Sampler(TaskOwner):
    """The server's gauges over time: `sample()` once, or every `every_s` while started."""

    def __init__(self, url: str, every_s: float = 1.0) -> None:
        super().__init__("soak-sampler")
        self.url = url
        self.every_s = every_s
        self.phase = "baseline"
        self.series: deque[dict[str, Any]] = deque(maxlen=MAX_SAMPLES)
        self.scrape_errors = 0
        self._t0 = time.monotonic()

    async def sample(self) -> dict[str, Any]:
        values = await scrape(self.url)
        row = {"t": round(time.monotonic() - self._t0, 2), "phase": self.phase, **values}
        self.series.append(row)
        return row

    def start(self) -> None:
        self.create_task(self._every(), "sample")

    async def _every(self) -> None:
        while True:
            try:
                await self.sample()
            except (OSError, EOFError, TimeoutError, ValueError, asyncio.LimitOverrunError) as exc:
                self.scrape_errors += 1
                log.warning("cannot scrape %s/metrics: %s", self.url, exc)
            await asyncio.sleep(self.every_s)


# --- one session ------------------------------------------------------------------------------


async def _reply_audible(caller: Caller, after: float) -> None:
    deadline = time.monotonic() + REPLY_WITHIN_S
    while caller.first_audible(after) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no reply audible within {REPLY_WITHIN_S:.0f} s")
        await asyncio.sleep(0.02)


async def _expect(caller: Caller, kind: str, after: int, within_s: float, **fields: Any) -> None:
    try:
        await caller.wait_for(
            kind, lambda e: fields.items() <= e.items(), within_s=within_s, after=after
        )
    except TimeoutError:
        what = " ".join([kind, *(f"{k}={v}" for k, v in fields.items())])
        raise TimeoutError(f"no {what} within {within_s:.0f} s") from None


async def _ask(caller: Caller, lines: Lines, k: int, long: bool) -> None:
    """Say a question (one asking for a long reply when `long`) and wait until the reply is
    audible."""
    q = lines.asks[k % len(lines.asks)] if long else lines.questions[k % len(lines.questions)]
    said = caller.say(q.pcm, RATE, "question")
    await said.done.wait()
    await _reply_audible(caller, said.started + q.last / RATE)


async def _turn(caller: Caller, lines: Lines, k: int, idle_s: float) -> None:
    mark = len(caller.events)
    await _ask(caller, lines, k, long=False)
    await _expect(caller, "transcript", mark, REPLY_WITHIN_S, role="assistant", final=True)


async def _barge_in(caller: Caller, lines: Lines, k: int, idle_s: float) -> None:
    await _ask(caller, lines, k, long=True)
    mark = len(caller.events)
    caller.say(lines.barge_ins[k % len(lines.barge_ins)].pcm, RATE, "barge-in")
    await _expect(caller, "interrupted", mark, INTERRUPTED_WITHIN_S)


async def _abrupt(caller: Caller, lines: Lines, k: int, idle_s: float) -> None:
    await _ask(caller, lines, k, long=True)
    caller.ws.transport.abort()
    async with asyncio.timeout(5):
        await caller.ws.wait_closed()
    if isinstance(caller, WebRTCCaller):  # the server closes its side: DTLS shutdown reaches us
        pc, deadline = caller.pc, time.monotonic() + PEER_NOTICE_S
        while pc.connectionState not in ("closed", "failed"):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the server left its peer connection open {PEER_NOTICE_S:.0f} s after "
                    "the socket dropped"
                )
            await asyncio.sleep(0.05)


async def _idle(caller: Caller, lines: Lines, k: int, idle_s: float) -> None:
    await asyncio.sleep(idle_s)


SCRIPTS: dict[str, Callable[[Caller, Lines, int, float], Awaitable[None]]] = {
    "turn": _turn, "barge-in": _barge_in, "abrupt": _abrupt, "idle": _idle
}  # fmt: skip


async def one_session(
    url: str, transport: str, behaviour: str, lines: Lines, k: int, idle_s: float, **kw: Any
) -> None:
    """Connect over `transport`, act out `behaviour`, leave (`bye`, except after `abrupt` and on
    the Realtime API, which has none) and close; raises what went wrong."""
    caller = await CALLERS[transport].connect(url, **kw)
    try:
        await _expect(caller, "session", 0, 30)
        await SCRIPTS[behaviour](caller, lines, k, idle_s)
        if behaviour != "abrupt" and transport != "realtime":
            with contextlib.suppress(ConnectionClosed):
                await caller.ws.send(json.dumps({"type": "bye"}))
    finally:
        await caller.close()


async def _bounded(session: Awaitable[None]) -> None:
    """`session`, stopped (as a `TimeoutError`) past `SESSION_TIMEOUT_S`. asyncio.timeout rather
    than wait_for, which on Python 3.11 can swallow a cancellation (CPython gh-86296)."""
    bound = asyncio.timeout(SESSION_TIMEOUT_S)
    try:
        async with bound:
            await session
    except TimeoutError:
        if not bound.expired():  # one of the session's own
            raise
        raise TimeoutError(f"the session took more than {SESSION_TIMEOUT_S:.0f} s") from None


# --- the report -------------------------------------------------------------------------------


@dataclass(slots=True)
class Verdict:
    """One count: its baseline, highest and last values, and whether it came back."""

    baseline: float
    peak: float
    after: float
    slack: float

    @property
    def returned(self) -> bool:
        return self.after <= self.baseline + self.slack


@dataclass(slots=True)
class SoakReport:
    """What a soak did and found; `ok` when every count came back and no session failed."""

    workers: int
    duration_s: float
    load_s: float = 0.0
    started: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Sessions started, by (transport, behaviour)."""
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    """The first `MAX_FAILURES_KEPT` failures: transport/behaviour: what was raised."""
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    rss_mb: tuple[float, float, float] | None = None
    """Baseline, peak, after (MB); None where the server cannot tell."""
    pool_threads: tuple[float, float] | None = None
    """Thread-pool workers at the baseline and after."""
    settled_s: float | None = None
    """How long after the load every count was back (None: not within the wait)."""
    scrape_errors: int = 0
    series: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sessions(self) -> int:
        return sum(self.started.values())

    @property
    def ok(self) -> bool:
        return not self.failed and all(v.returned for v in self.verdicts.values())

    def fail(self, transport: str, behaviour: str, exc: BaseException) -> None:
        self.failed[(transport, behaviour)] += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            what = str(exc) or "(no message)"
            self.failures.append(f"{transport}/{behaviour}: {type(exc).__name__}: {what}")

    def judge(self, baseline: dict[str, Any], after: dict[str, Any]) -> None:
        """Fill `verdicts` and `rss_mb` from the baseline, the series and the last sample."""
        if "pool_threads" in baseline and "pool_threads" in after:
            self.pool_threads = (baseline["pool_threads"], after["pool_threads"])
        for key in (*COUNTS, "rss_bytes"):
            if key not in baseline or key not in after:
                continue  # the server cannot tell (no /proc)
            peak = max([after[key], *(r[key] for r in self.series if key in r)])
            if key == "rss_bytes":
                self.rss_mb = (baseline[key] / 1e6, peak / 1e6, after[key] / 1e6)
            else:
                slack = allowed(key, baseline, after)
                self.verdicts[key] = Verdict(baseline[key], peak, after[key], slack)

    def by(self, index: int, counts: Counter[tuple[str, str]] | None = None) -> dict[str, int]:
        """Sessions (or `counts`) by transport (`index` 0) or by behaviour (1)."""
        out: Counter[str] = Counter()
        for pair, n in (self.started if counts is None else counts).items():
            out[pair[index]] += n
        return dict(out)

    def as_json(self) -> dict[str, Any]:
        rss = self.rss_mb
        return {
            "ok": self.ok,
            "sessions_at_once": self.workers,
            "duration_s": self.duration_s,
            "load_s": round(self.load_s, 1),
            "sessions": self.sessions,
            "by_transport": self.by(0),
            "by_behaviour": self.by(1),
            "by_pair": {f"{t}/{b}": n for (t, b), n in sorted(self.started.items())},
            "failed": sum(self.failed.values()),
            "failed_by_pair": {f"{t}/{b}": n for (t, b), n in sorted(self.failed.items())},
            "failures": self.failures,
            "gauges": {k: {**asdict(v), "returned": v.returned} for k, v in self.verdicts.items()},
            "rss_mb": dict(zip(("baseline", "peak", "after"), rss, strict=True)) if rss else None,
            "rss_growth_mb": round(rss[2] - rss[0], 1) if rss else None,
            "pool_threads": self.pool_threads,
            "settled_s": self.settled_s,
            "scrape_errors": self.scrape_errors,
            "series": self.series,
        }

    def table(self) -> str:
        """The report as text: sessions by transport and behaviour, then each count."""
        ts = [t for t in TRANSPORTS if self.by(0).get(t)]
        bs = [b for b in BEHAVIOURS if self.by(1).get(b)]

        def row(name: str, cells: list[Any]) -> str:
            return f"{name:<10}" + "".join(f"{c:>14}" for c in cells)

        def cell(pair: tuple[str, str]) -> str:
            bad = self.failed[pair]
            return f"{self.started[pair]}" + (f" ({bad} bad)" if bad else "")

        out = [row("sessions", [*bs, "total"])]
        out += [row(t, [*(cell((t, b)) for b in bs), self.by(0)[t]]) for t in ts]
        out += [row("total", [*(self.by(1)[b] for b in bs), self.sessions]), ""]
        out.append(f"{'gauge':<18}{'baseline':>10}{'peak':>10}{'after':>10}  slack  returned")
        for key, v in self.verdicts.items():
            out.append(
                f"{key:<18}{v.baseline:>10.0f}{v.peak:>10.0f}{v.after:>10.0f}"
                f"  {f'+{v.slack:g}':>5}  {'yes' if v.returned else 'NO'}"
            )
            if key == "threads" and self.pool_threads is not None:
                b, a = self.pool_threads
                out.append(f"{'  in thread pools':<18}{b:>10.0f}{'':>10}{a:>10.0f}  (not judged)")
        if self.rss_mb is not None:
            b, p, a = self.rss_mb
            out.append(f"{'rss MB':<18}{b:>10.1f}{p:>10.1f}{a:>10.1f}  growth {a - b:+.1f} MB")
        back = f"{self.settled_s:.1f} s after the load" if self.settled_s is not None else "NO"
        failed = sum(self.failed.values())
        out += [
            "",
            f"{self.sessions} sessions in {self.load_s:.0f} s, {self.workers} at once, "
            f"{failed} failed; every count back to its baseline: {back}",
            *(f"  failed: {f}" for f in self.failures),
        ]
        return "\n".join(out)


def allowed(key: str, baseline: dict[str, Any], now: dict[str, Any]) -> float:
    """How far above its baseline the count `key` may be in sample `now`: its `SLACK`, and for
    threads, the workers that thread pools started since the baseline (a pool starts them on
    demand, up to its fixed size, and keeps them: bounded, not leaked)."""
    if key != "threads":
        return SLACK[key]
    started = float(now.get("pool_threads", 0)) - float(baseline.get("pool_threads", 0))
    return SLACK[key] + max(0.0, started)


# --- the run ----------------------------------------------------------------------------------


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
        progress("voicing the script with the project's TTS")
        lines = await asyncio.to_thread(voice_script, settings)
    plan = [(t, b) for b in behaviours for t in transports]
    report = SoakReport(workers=sessions, duration_s=duration_s)
    kw = {"persona": persona} if persona is not None else {}
    async with bench_server(url, argv, progress, "soak", sessions) as served:
        progress(f"warm-up: one turn over each of {', '.join(transports)}")
        for t in transports:
            try:
                await _bounded(one_session(served.url, t, "turn", lines, 0, idle_s, **kw))
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
                    await _bounded(
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
