"""A benchmark figure (median and p95 of repeated measurements) and the table that prints them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Figure:
    engine: str
    """What was measured: an engine, or a configuration of the pipeline."""
    metric: str
    unit: str
    samples: list[float] = field(default_factory=list)
    target: float | None = None
    """The median should be at most this (None: no target)."""

    @property
    def median(self) -> float:
        return float(np.median(self.samples)) if self.samples else float("nan")

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
        }


def table(figures: list[Figure]) -> str:
    """One line per figure: median, p95, runs, and the verdict against its target."""
    width = max([16, *(len(f.engine) for f in figures)])
    mwidth = max([16, *(len(f.metric) for f in figures)])
    lines = [
        f"{'engine':<{width}} {'metric':<{mwidth}} {'median':>9} {'p95':>9}  {'unit':<6} "
        f"{'runs':>4}  target"
    ]
    for f in figures:
        verdict = (
            ""
            if f.target is None
            else f"≤ {f.target:g} {'ok' if f.median <= f.target else 'MISSED'}"
        )
        figures_ = f"{f.median:>9.3f} {f.p95:>9.3f}  {f.unit:<6} {len(f.samples):>4}"
        lines.append(f"{f.engine:<{width}} {f.metric:<{mwidth}} {figures_}  {verdict}")
    return "\n".join(lines)
