"""What a soak found: sessions by transport and behaviour, failures, and whether each count of
the server came back to its baseline; as a table and as JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from voice_agent.bench.soak.sessions import BEHAVIOURS, TRANSPORTS

COUNTS = ("sessions", "tasks", "threads", "fds", "peer_connections")
"""The gauges that must come back to their baseline (pool threads and RSS are reported)."""
SLACK = {"sessions": 0, "tasks": 0, "threads": 0, "fds": 0, "peer_connections": 0}
"""How far above its baseline a count may stay and still have come back (docs/soak.md);
`threads` may also keep the thread-pool workers started meanwhile (`allowed`)."""
MAX_FAILURES_KEPT = 100


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
