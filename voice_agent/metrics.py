"""What `/metrics` exports (Prometheus text format), from what the server and its sessions do.

One `ServerMetrics` per server, on its own registry (so tests and several servers in one
process never share counters). The turn-latency histograms are fed from the `turn_metrics`
messages that sessions send their clients, so the dashboard, the page and Prometheus show the
same figures.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS_S = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)
TURN_FIGURES = (
    "endpoint_ms",
    "asr_ms",
    "llm_first_token_ms",
    "tts_first_chunk_ms",
    "voice_to_voice_ms",
)


class ServerMetrics:
    """Counters, gauges and histograms of one server."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
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
        self.errors = Counter(
            "voice_agent_errors", "Error events sent to clients", ["code"], registry=r
        )
        self.turn_latency = Histogram(
            "voice_agent_turn_latency_seconds",
            "Per turn, from the end of the user's speech to each stage's first output",
            ["figure"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self._active = 0

    def session_started(self, transport: str) -> None:
        self.sessions.labels(transport).inc()
        self._active += 1
        self.sessions_active.set(self._active)

    def session_ended(self, transport: str) -> None:
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
            for figure in TURN_FIGURES:
                value = message.get(figure)
                if isinstance(value, int | float):
                    self.turn_latency.labels(figure.removesuffix("_ms")).observe(value / 1000)
        elif kind == "error":
            self.error(str(message.get("code", "internal")))

    def render(self) -> bytes:
        return generate_latest(self.registry)
