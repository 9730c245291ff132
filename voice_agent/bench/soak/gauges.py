"""The server's resource gauges, read from its `/metrics` (docs/soak.md): once, or every second
while a soak runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from voice_agent.tasks import TaskOwner

log = logging.getLogger(__name__)

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
MAX_SAMPLES = 24 * 3600
MAX_METRICS_BYTES = 4 << 20


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
