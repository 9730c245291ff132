"""`voice-agent bench [models | turns | conversation | capacity | soak | noise]`: runs the benches
(`voice_agent.bench`), prints their figures and writes them as JSON (and plots, where drawn)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voice_agent.bench import Progress
from voice_agent.cli.exits import EXIT_INPUT, EXIT_OK
from voice_agent.cli.settings import settings_argv
from voice_agent.config import Settings


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    """`voice-agent bench [SUITE]`: each suite's figures as a table and as JSON; ValueError for a
    flag that does not fit the suite."""
    from voice_agent.admission import remember_knee
    from voice_agent.bench import capacity, conversation, figures, models, turntaking

    if args.repeat is not None and args.repeat < 1:
        raise ValueError("--repeat must be at least 1")
    counts = _counts(args.sessions)
    if args.suite != "capacity" and len(counts) > 1:
        raise ValueError("--sessions takes a list only for `bench capacity`")
    args.sessions = counts[0] if args.sessions is not None else None

    def progress(what: str) -> None:
        print(f"bench: {what}…", file=sys.stderr)

    if args.suite == "soak":
        return _soak(args, settings, progress)
    if args.suite == "noise":
        return _noise(args, settings, progress)

    everything: list[figures.Figure] = []
    for suite in [args.suite] if args.suite else ["models", "conversation"]:
        details: dict[str, Any] = {}
        plots: list[tuple[Callable[[list[figures.Figure], str, Path], None], str, str]] = []
        if suite == "models":
            results = models.run(settings, args.repeat or 20, progress)
        elif suite == "turns":
            results = asyncio.run(turntaking.run(settings, args.repeat or 10, progress))
        elif suite == "capacity":
            results, details = asyncio.run(
                capacity.run(
                    settings,
                    url=args.url,
                    counts=counts if args.sessions is not None else capacity.COUNTS,
                    turns=args.repeat or 5,
                    transport=args.transport or "webrtc",
                    argv=settings_argv(args),
                    progress=progress,
                    persona=args.persona,
                    paces=[args.pace] if args.pace else ["human", "back-to-back"],
                )
            )
            plots = [(capacity.plot, "voice-agent bench capacity", "bench-capacity.png")]
            knee = details["knee_sessions"].get("human")
            print(f"knee (p95 <= {capacity.KNEE_P95_MS:g} ms at a human pace): "
                  f"{knee or 'none'}", file=sys.stderr)  # fmt: skip
            if args.url is None and "human" in details["paces"]:  # its own server: these settings
                where = remember_knee(settings, knee or 0)
                print(f"server.max_sessions auto now admits {max(1, knee or 0)} sessions on this "
                      f"machine (remembered in {where})", file=sys.stderr)  # fmt: skip
        else:
            results, details = asyncio.run(
                conversation.run(
                    settings,
                    url=args.url,
                    sessions=args.sessions or 1,
                    turns=args.repeat or 10,
                    transport=args.transport or "webrtc",
                    argv=settings_argv(args),
                    progress=progress,
                    persona=args.persona,
                    pace=args.pace or "back-to-back",
                )
            )
            title = (
                f"voice-agent bench conversation: {details['sessions']} x {details['transport']}"
            )
            plots = [(conversation.plot, title, "bench-conversation.png")]
        everything += results
        if args.suite:
            print(figures.table(results))
        path = Path(f"bench-{suite}.json")
        if args.json is not None:  # with every suite, each gets its own file next to it
            path = args.json if args.suite else args.json.with_stem(f"{args.json.stem}-{suite}")
        body = [f.as_json() for f in results]
        _write_json(path, {"figures": body, **details} if details else body)
        for draw, title, default in plots:
            png = args.plot or Path(default)
            try:
                draw(results, title, png)
                print(f"plot written to {png}", file=sys.stderr)
            except figures.NoPlot as exc:
                print(f"no plot: {exc}", file=sys.stderr)
    if not args.suite:
        print(figures.table(everything))
    return EXIT_OK


def _counts(text: str | None) -> list[int]:
    """`--sessions`: one count, or a comma-separated list of them."""
    if text is None:
        return [1]
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--sessions takes a number or a list like 1,2,4,8, not {text!r}"
        ) from None
    if min(counts) < 1:
        raise ValueError("--sessions must be at least 1")
    return counts


def _soak(args: argparse.Namespace, settings: Settings, progress: Progress) -> int:
    """`bench soak`: the table on stdout, everything (with the time series) as JSON; exit
    status 1 when a count did not come back to its baseline or a session failed."""
    from voice_agent.bench import soak

    if not args.duration > 0:
        raise ValueError("--duration must be more than 0 seconds")
    try:
        report = asyncio.run(
            soak.run(
                settings,
                url=args.url,
                sessions=args.sessions or soak.DEFAULT_WORKERS,
                duration_s=args.duration,
                argv=settings_argv(args),
                progress=progress,
                transports=[args.transport] if args.transport else soak.TRANSPORTS,
                persona=args.persona,
            )
        )
    except (RuntimeError, OSError) as exc:  # no server, a failed warm-up, no /metrics
        raise ValueError(str(exc)) from None
    print(report.table())
    _write_json(args.json or Path("bench-soak.json"), report.as_json())
    return EXIT_OK if report.ok else EXIT_INPUT


def _noise(args: argparse.Namespace, settings: Settings, progress: Progress) -> int:
    """`bench noise`: the table on stdout, every outcome (with its transcripts) as JSON."""
    from voice_agent.bench import noise

    levels = noise.levels_of(settings, args.suppression)
    outcomes = asyncio.run(noise.run(settings, args.quick, progress, levels))
    print(noise.table(outcomes))
    _write_json(args.json or Path("bench-noise.json"), [o.as_json() for o in outcomes])
    return EXIT_OK


def _write_json(path: Path, body: object) -> None:
    path.write_text(json.dumps(body, indent=2))
    print(f"figures written to {path}", file=sys.stderr)
