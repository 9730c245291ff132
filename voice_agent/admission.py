"""How many sessions a server admits at once: past that, a new caller gets `busy` at once
instead of every caller getting slower.

`server.max_sessions` is a number, or `auto` (the default): the knee that `voice-agent bench
capacity` last measured on this machine with these engines (the most sessions whose
voice-to-voice p95 stayed within 1.5 s at a human pace), remembered in
~/.cache/voice-agent/capacity.json; with no such measurement, one session for every
`CORES_PER_SESSION` cores (the knee measured on the 2-core development machine,
docs/scaling.md). A measurement holds for one CPU model, core count and set of engine settings:
change any and `auto` estimates again until the bench is run again.

`Admission` holds a server's session slots: a caller who finds them all taken waits a moment
(`ADMIT_WAIT_S`) for one to free, then gets `busy`; a server that is shutting down admits none.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from voice_agent import __version__, cachefile, nativecode
from voice_agent.config import Settings

ADMIT_WAIT_S = 1.5
"""How long a caller who finds every session slot taken waits for one to free before `busy`:
a person who hangs up and calls again, or reloads the page, finds the old session still
closing (its socket's close handshake)."""
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


class Admission:
    """A server's session slots (see the module docstring): sessions running, and those still
    being set up."""

    def __init__(self, limit: SessionLimit, wait_s: float = ADMIT_WAIT_S) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.draining = False
        """True once the server stops taking sessions."""
        self._taken = 0
        self._freed = asyncio.Event()

    async def admit(self) -> bool:
        """Take a slot, waiting up to `wait_s` for one; False when none freed (or the server is
        draining). Every True is paired with a `release`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while not self.draining and self._taken >= self.limit.sessions:
            if loop.time() >= deadline:
                return False
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._freed.wait()
        if self.draining:
            return False
        self._taken += 1
        return True

    def release(self) -> None:
        self._taken -= 1
        self._freed.set()

    def drain(self) -> None:
        """Admit no one from now on."""
        self.draining = True
        self._freed.set()
