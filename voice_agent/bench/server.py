"""The server a bench talks to: one already running, or `voice-agent serve` in a child process
that the bench starts, waits for and stops (and whose CPU time it can read)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from voice_agent.bench import Progress


@dataclass(slots=True)
class Served:
    """A server a bench talks to."""

    url: str
    """ws://host:port"""
    pid: int | None
    """The server's process, when this command started it (for its CPU use)."""


def bench_server(
    url: str | None, argv: Sequence[str], progress: Progress, what: str, sessions: int
) -> contextlib.AbstractAsyncContextManager[Served]:
    """The server at `url`, or (None) one started for the `what` with `argv`, admitting at
    least `sessions` at once (whatever this machine's measured capacity: the bench measures
    past it)."""
    if url is not None:
        return contextlib.nullcontext(Served(url.rstrip("/"), None))
    progress(f"starting a server (voice-agent serve) for the {what}")
    return self_started_server([*argv, "--set", f"server.max_sessions={max(1, sessions)}"])


@contextlib.asynccontextmanager
async def self_started_server(argv: Sequence[str]) -> AsyncIterator[Served]:
    """`voice-agent serve` in a child process on a free port, until the block ends.
    `argv`: settings flags to pass on (--config, --set)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"voice-agent-bench-{port}.log"
    with log.open("w") as out:
        cmd = [sys.executable, "-m", "voice_agent", "serve", "--port", str(port), *argv]
        child = await asyncio.create_subprocess_exec(*cmd, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 180
        while True:
            if child.returncode is not None:
                raise RuntimeError(f"the server exited ({child.returncode}); see {log}")
            with contextlib.suppress(OSError):
                await asyncio.to_thread(
                    urllib.request.urlopen, f"http://127.0.0.1:{port}/healthz", timeout=2
                )
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within 3 minutes; see {log}")
            await asyncio.sleep(0.5)
        yield Served(f"ws://127.0.0.1:{port}", child.pid)
    finally:
        if child.returncode is None:
            child.terminate()
            try:
                async with asyncio.timeout(30):
                    await child.wait()
            except TimeoutError:
                child.kill()
                await child.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
