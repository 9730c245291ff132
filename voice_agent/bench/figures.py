"""A benchmark figure (median and p95 of repeated measurements) and the table that prints them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Figure:
    engine: str
    """What was measured: an engine, or a configuration of the pipeline."""
    metric: str
    unit: str
    samples: list[float] = field(default_factory=list)
    target: float | None = None
    """The median (the share, for a share) should be at most this (None: no target)."""
    p95_target: float | None = None
    """The p95 should be at most this (None: no target)."""
    share: bool = False
    """Each sample is a yes (1) or a no (0): the figure is the share of yeses, not a median."""

    @property
    def median(self) -> float:
        if not self.samples:
            return float("nan")
        return float(np.mean(self.samples) if self.share else np.median(self.samples))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.samples, 95)) if self.samples else float("nan")

    def as_json(self) -> dict[str, object]:
        return {
            "engine": self.engine,
            "metric": self.metric,
            "unit": self.unit,
            "median": round(self.median, 4),
            "p95": round(self.p95, 4),
            "runs": len(self.samples),
            "target": self.target,
            "p95_target": self.p95_target,
            "share": self.share,
            "samples": [round(x, 4) for x in self.samples],
        }


def table(figures: list[Figure]) -> str:
    """One line per figure: median (or share), p95, runs, and the verdict against its targets."""
    width = max([16, *(len(f.engine) for f in figures)])
    mwidth = max([16, *(len(f.metric) for f in figures)])
    lines = [  # a share's "median" column holds the share of yeses
        f"{'engine':<{width}} {'metric':<{mwidth}} {'median':>9} {'p95':>9}  {'unit':<6} "
        f"{'runs':>4}  target"
    ]
    for f in figures:
        verdicts = []
        if f.target is not None:
            what = "share" if f.share else "median"
            verdicts.append(f"{what} ≤ {f.target:g} {'ok' if f.median <= f.target else 'MISSED'}")
        if f.p95_target is not None:
            verdicts.append(f"p95 ≤ {f.p95_target:g} {'ok' if f.p95 <= f.p95_target else 'MISSED'}")
        verdict = ", ".join(verdicts)
        p95 = f"{'':>9}" if f.share else f"{f.p95:>9.3f}"
        figures_ = f"{f.median:>9.3f} {p95}  {f.unit:<6} {len(f.samples):>4}"
        lines.append(f"{f.engine:<{width}} {f.metric:<{mwidth}} {figures_}  {verdict}")
    return "\n".join(lines)


class NoPlot(Exception):
    """Why a plot was not drawn (matplotlib missing, nothing measured)."""


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files; NoPlot without the `bench` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NoPlot("install voice-agent[bench] (matplotlib)") from None
    return plt
