"""Where turn figures go besides the clients: Prometheus (`/metrics`) and a JSON-lines log.

One `ServerMetrics` per server, on its own registry (so tests and several servers in one
process never share counters). The turn-latency histograms are fed from the same `turn_metrics`
messages that sessions send their clients, so the page, the dashboard and Prometheus show the
same figures. The process gauges (`voice_agent_process_*`, and `voice_agent_peer_connections`
as the server reads it) are read when `/metrics` is scraped, on the event loop; `voice-agent
bench soak` watches them come back to their idle baseline after load. `TurnLog` appends each
finished turn's whole timeline (`turn_record`, see `voice_agent.timeline`) to a file, off the
event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from voice_agent.tasks import TaskOwner
from voice_agent.timeline import STAGES

LATENCY_BUCKETS_S = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)
LOOP_LAG_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
log = logging.getLogger(__name__)


def _loop_tasks() -> int | None:
    try:
        return len(asyncio.all_tasks(asyncio.get_running_loop()))
    except RuntimeError:  # not on an event loop: nothing to count
        return None


def _pool_threads() -> int:
    worker = concurrent.futures.thread._worker
    return sum(getattr(t, "_target", None) is worker for t in threading.enumerate())


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc (not Linux)
        return None


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


PROCESS_GAUGES: dict[str, tuple[str, Callable[[], int | None]]] = {
    "voice_agent_process_tasks": ("asyncio tasks of the server's event loop", _loop_tasks),
    "voice_agent_process_threads": ("Python threads alive", threading.active_count),
    "voice_agent_process_pool_threads": (
        "Of those, workers of thread pools (the loop's default executor, the engine pool): "
        "started on demand up to the pool's size, then kept",
        _pool_threads,
    ),
    "voice_agent_process_open_fds": ("Open file descriptors (Linux only)", _open_fds),
    "voice_agent_process_rss_bytes": ("Resident memory in bytes (Linux only)", _rss_bytes),
}
"""Gauges read at scrape time: name -> (help, reader). A reader returns None where it cannot
tell (no /proc, no running loop), and the gauge is then left out."""


class ProcessCollector(Collector):
    """The process's resources, read when scraped (`PROCESS_GAUGES`, and `extra` of the same
    form). Reads only /proc and in-memory counts: cheap enough to run on the event loop, as
    `/metrics` does."""

    def __init__(self, extra: dict[str, tuple[str, Callable[[], int | None]]]) -> None:
        self.gauges = {**PROCESS_GAUGES, **extra}

    def collect(self) -> Iterator[Metric]:
        for name, (doc, read) in self.gauges.items():
            value = read()
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)

    def describe(self) -> Iterator[Metric]:
        for name, (doc, _read) in self.gauges.items():
            yield GaugeMetricFamily(name, doc)


class EngineCollector(Collector):
    """Engines that run apart (the LLM server child), read when scraped from `health()`:
    ``{"llm": {"state": "up", "restarts": 0, ...}}``."""

    def __init__(self, health: Callable[[], dict[str, Any]]) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        for engine, state in self.health().items():
            yield GaugeMetricFamily(
                f"voice_agent_{engine}_server_up",
                f"1 while the {engine} server serves, 0 while it (re)starts",
                value=1 if state.get("state") == "up" else 0,
            )
            yield CounterMetricFamily(
                f"voice_agent_{engine}_server_restarts",
                f"Times the {engine} server died and was started again",
                value=state.get("restarts", 0),
            )

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names depend on the engines loaded: not checked at registration


class ServerMetrics:
    """Counters, gauges and histograms of one server."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, peer_connections: Callable[[], int] | None = None) -> None:
        """`peer_connections`: reads how many WebRTC peer connections are open (the
        `voice_agent_peer_connections` gauge; left out without it)."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_active = Gauge(
            "voice_agent_sessions_active", "Sessions running now", registry=r
        )
        self.sessions = Counter(
            "voice_agent_sessions", "Sessions started", ["transport"], registry=r
        )
        self.rejected_ = Counter(
            "voice_agent_connections_rejected",
            "Connections refused before a session started",
            ["reason"],
            registry=r,
        )
        self.sessions_ended = Counter(
            "voice_agent_sessions_ended",
            "Sessions ended, by reason: idle and max_duration when the session ended itself "
            "(the persona's idle policy, the time limit), other for the rest",
            ["reason"],
            registry=r,
        )
        self.reprompts = Counter(
            "voice_agent_idle_reprompts", "Re-prompts said to a caller who went quiet", registry=r
        )
        self.errors = Counter(
            "voice_agent_errors", "Error events sent to clients", ["code"], registry=r
        )
        self.turn_latency = Histogram(
            "voice_agent_turn_latency_seconds",
            "Per turn, from the end of the user's speech to each stage's first output",
            ["stage"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.loop_lag = Histogram(
            "voice_agent_event_loop_lag_seconds",
            "How much later than due the event loop ran a timer (sampled every 100 ms)",
            buckets=LOOP_LAG_BUCKETS_S,
            registry=r,
        )
        extra: dict[str, tuple[str, Callable[[], int | None]]] = {}
        if peer_connections is not None:
            peers = "WebRTC peer connections accepted and not closed yet"
            extra["voice_agent_peer_connections"] = (peers, peer_connections)
        r.register(ProcessCollector(extra))
        self._active = 0

    def watch_engines(self, health: Callable[[], dict[str, Any]]) -> None:
        """Report the engines' own health (see `EngineCollector`) on every scrape."""
        self.registry.register(EngineCollector(health))

    def session_started(self, transport: str) -> None:
        self.sessions.labels(transport).inc()
        self._active += 1
        self.sessions_active.set(self._active)

    def session_ended(self, transport: str, reason: str = "") -> None:
        self.sessions_ended.labels(reason or "other").inc()
        self._active -= 1
        self.sessions_active.set(self._active)

    def rejected(self, reason: str) -> None:
        self.rejected_.labels(reason).inc()

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def observe(self, message: dict[str, Any]) -> None:
        """Count what a session sends its client (`turn_metrics`, `error`)."""
        kind = message.get("type")
        if kind == "turn_metrics":
            for stage in STAGES:
                value = message.get(f"{stage}_ms")
                if isinstance(value, int | float):
                    self.turn_latency.labels(stage).observe(value / 1000)
        elif kind == "error":
            self.error(str(message.get("code", "internal")))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class TurnLog(TaskOwner):
    """Appends turn records to `path` as JSON lines, in a worker thread; at most `max_queued`
    wait (past that the newest are dropped and counted), so a slow disk never holds a session."""

    def __init__(self, path: Path, max_queued: int = 1000) -> None:
        super().__init__("turn-log")
        self.path = path.expanduser()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max_queued)
        self.dropped = 0
        self.written = 0

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.create_task(self._run(), "writer")

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        while True:
            await self._flush([await self._queue.get()])

    async def _flush(self, batch: list[dict[str, Any]]) -> None:
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        lines = "".join(json.dumps(r) + "\n" for r in batch)
        try:
            await asyncio.to_thread(self._append, lines)
            self.written += len(batch)
        except OSError as exc:
            self.dropped += len(batch)
            log.warning("cannot append turn records to %s: %s", self.path, exc)

    def _append(self, lines: str) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(lines)

    async def close(self) -> None:
        """Stop, once what is queued has been written."""
        await self.cancel_tasks()
        if not self._queue.empty():
            await self._flush([])
