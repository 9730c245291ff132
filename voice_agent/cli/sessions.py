"""`voice-agent sessions list | show ID | export ID [--out PATH]`: the session records on this
machine (records.dir; see docs/records.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from voice_agent.cli.exits import EXIT_INPUT, EXIT_OK
from voice_agent.config import Settings
from voice_agent.records import RecordError, RecordStore


def run_sessions(args: argparse.Namespace, settings: Settings) -> int:
    """List, show or export records; 1 for an unknown or malformed id."""
    store = RecordStore(settings.records.dir)
    try:
        if args.action == "list":
            return _list(store)
        if args.action == "show":
            for line in store.lines(args.id):
                print(readable(line))
            return EXIT_OK
        out = store.export(args.id, args.out or Path(f"{args.id}.tar.gz"))
        print(out)
        return EXIT_OK
    except RecordError as exc:
        print(f"voice-agent sessions: {exc}", file=sys.stderr)
        return EXIT_INPUT


def _list(store: RecordStore) -> int:
    records = store.summaries()
    if not records:
        print(f"no records in {store.root}", file=sys.stderr)
        return EXIT_OK
    print(f"{'id':<23} {'started (UTC)':<20} {'duration':>9} {'turns':>5}  {'persona':<12} audio")
    for r in records:
        started = (r.started_at or "?")[:19].replace("T", " ")
        duration = f"{r.duration_s:.1f} s" if r.duration_s is not None else "?"
        cut = "" if r.complete else "  (cut short)"
        audio = "yes" if r.audio else "no"
        persona = r.persona or "?"
        print(f"{r.id:<23} {started:<20} {duration:>9} {r.turns:>5}  {persona:<12} {audio}{cut}")
    return EXIT_OK


def _at(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "   -   "
    return f"{int(ms // 60000):02d}:{ms % 60000 / 1000:06.3f}"


def readable(line: dict[str, Any]) -> str:
    """One transcript line as a person reads it."""
    kind, t = line.get("type"), _at(line.get("t_ms"))
    if kind == "session":
        audio = " (with audio)" if line.get("audio") else ""
        return (
            f"{t}  session {line.get('session')} started {line.get('started_at')}, "
            f"persona {line.get('persona')}{audio}"
        )
    if kind == "user_turn":
        span = f"{_at(line.get('start_ms'))}-{_at(line.get('end_ms'))}"
        return f"{span}  user (turn {line.get('turn')}): {line.get('text')}"
    if kind == "reply":
        span = f"{_at(line.get('start_ms'))}-{_at(line.get('end_ms'))}"
        heard = line.get("heard") or ""
        generated = line.get("generated")
        said = f"assistant: {heard}" if heard else "assistant: (nothing heard)"
        if line.get("interrupted"):
            said += f"  [interrupted after {line.get('played_ms')} ms"
            said += f"; generated: {generated}]" if generated and generated != heard else "]"
        return f"{span}  {said}"
    if kind == "interruption":
        return f"{t}  interruption by {line.get('by')}: {line.get('text')!r}"
    if kind == "error":
        fatal = " (fatal)" if line.get("fatal") else ""
        return f"{t}  error {line.get('code')}{fatal}: {line.get('message')}"
    if kind == "turn_retracted":
        return f"{t}  turn {line.get('turn')} withdrawn (the user went on)"
    if kind == "session_ended":
        return f"{t}  session ended"
    return f"{t}  {kind}"
