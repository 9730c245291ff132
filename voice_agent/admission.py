"""How many sessions a server admits at once: past that, a new caller gets `busy` at once
instead of every caller getting slower.

`server.max_sessions` is a number, or `auto` (the default): the knee that `voice-agent bench
capacity` last measured on this machine with these engines (the most sessions whose
voice-to-voice p95 stayed within 1.5 s at a human pace), remembered in
~/.cache/voice-agent/capacity.json; with no such measurement, one session for every
`CORES_PER_SESSION` cores (the knee measured on the 2-core development machine,
docs/scaling.md). A measurement holds for one CPU model, core count and set of engine settings:
change any and `auto` estimates again until the bench is run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from voice_agent import __version__, cachefile, nativecode
from voice_agent.config import Settings

CORES_PER_SESSION = 2
"""Without a measurement: 2 cores held one session within the knee's p95 (docs/scaling.md)."""


@dataclass(frozen=True, slots=True)
class SessionLimit:
    sessions: int
    why: str
    """Where the number came from, for the log, /healthz readers and `doctor`."""


def default_capacity_file() -> Path:
    return cachefile.cache_file("capacity.json")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_key(settings: Settings) -> str:
    """What a measured capacity holds for: the CPU, its cores and the engines' settings."""
    cpu = nativecode.cpu()
    engines = settings.engines.model_dump(mode="json")
    blob = json.dumps([__version__, cpu.model, _cores(), engines], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def session_limit(settings: Settings, capacity_file: Path | None = None) -> SessionLimit:
    """`server.max_sessions`, with `auto` resolved (see the module docstring)."""
    configured = settings.server.max_sessions
    if configured != "auto":
        return SessionLimit(configured, "server.max_sessions")
    path = capacity_file or default_capacity_file()
    measured = cachefile.read(path).get(machine_key(settings))
    if isinstance(measured, dict) and isinstance(measured.get("sessions"), int):
        when = time.strftime("%Y-%m-%d", time.localtime(measured.get("at", 0)))
        return SessionLimit(
            max(1, measured["sessions"]),
            f"auto: measured by `voice-agent bench capacity` on {when}",
        )
    cores = _cores()
    return SessionLimit(
        max(1, cores // CORES_PER_SESSION),
        f"auto: estimated from {cores} cores; `voice-agent bench capacity` measures this machine",
    )


def remember_knee(settings: Settings, knee: int, capacity_file: Path | None = None) -> Path:
    """Make `knee` (at least 1: one caller is always let in) what `auto` means for `settings`
    on this machine; the file it was written to."""
    path = capacity_file or default_capacity_file()
    known = cachefile.read(path)
    known[machine_key(settings)] = {"sessions": max(1, knee), "at": time.time()}
    cachefile.write(path, known, "the measured capacity")
    return path
