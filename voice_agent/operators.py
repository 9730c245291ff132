"""The operators' feed (`WS /events`): every session's events, for the latency dashboard.

The server publishes here what each session sends its own client (`state`, `transcript`,
`interrupted`, `turn_metrics`, `error`), tagged with the session's id, and when sessions start
and end. Each operator connection gets a `hello` (the sessions now, the last turns' metrics)
and then everything as it happens, through its own bounded queue: a slow operator loses its
oldest messages (and is told how many), never slows a session down.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import deque
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from voice_agent.eventbus import EventBus, Subscription
from voice_agent.tasks import TaskOwner
from voice_agent.transports.sockets import SEND_TIMEOUT_S, send_within

HELLO_TURNS = 100
"""How many recent `turn_metrics` a new operator gets."""


class OperatorFeed:
    """Fan-out of sessions' events to operator connections (see the module docstring)."""

    def __init__(self, turns_kept: int = 500, queue: int = 2048) -> None:
        self.bus: EventBus[dict[str, Any]] = EventBus(queue)
        self.turns: deque[dict[str, Any]] = deque(maxlen=turns_kept)
        """The last `turns_kept` turns' metrics, oldest first (a ring)."""
        self._sessions: dict[str, dict[str, Any]] = {}
        self.connections = 0
        self.boot = uuid.uuid4().hex[:12]
        """Names this run of the server: session ids start over when it restarts."""

    def session_started(self, session: str, persona: dict[str, str], transport: str) -> None:
        info = {"session": session, "persona": persona, "transport": transport}
        self._sessions[session] = {**info, "state": "listening", "since": time.monotonic()}
        self._publish({"type": "session_started", **info})

    def session_ended(self, session: str) -> None:
        if self._sessions.pop(session, None) is not None:
            self._publish({"type": "session_ended", "session": session})

    def publish(self, session: str, message: dict[str, Any]) -> None:
        """One message a session sent its client."""
        tagged = {**message, "session": session}
        if tagged["type"] == "turn_metrics":
            self.turns.append(tagged)
        elif tagged["type"] == "state" and session in self._sessions:
            self._sessions[session]["state"] = message["state"]
        self._publish(tagged)

    def _publish(self, message: dict[str, Any]) -> None:
        self.bus.publish(message)

    def close(self) -> None:
        """End every operator's feed (the server is stopping)."""
        self.bus.close()

    def hello(self, max_sessions: int) -> dict[str, Any]:
        now = time.monotonic()
        sessions = [
            {**{k: v for k, v in info.items() if k != "since"}, "started_s_ago": round(now - since)}
            for info in self._sessions.values()
            for since in [info["since"]]
        ]
        turns = list(self.turns)[-HELLO_TURNS:]
        return {
            "type": "hello",
            "boot": self.boot,
            "max_sessions": max_sessions,
            "sessions": sessions,
            "turns": turns,
        }

    async def serve(self, ws: ServerConnection, max_sessions: int) -> None:
        """Feed one operator connection until it closes."""
        sub = self.bus.subscribe()
        owner = TaskOwner("operator")
        self.connections += 1
        try:
            owner.create_task(self._ignore_input(ws, sub), "input")
            await send_within(ws, json.dumps(self.hello(max_sessions)), SEND_TIMEOUT_S)
            told = 0
            async for message in sub:
                if sub.lost > told:
                    lost = {"type": "lost", "count": sub.lost - told}
                    await send_within(ws, json.dumps(lost), SEND_TIMEOUT_S)
                    told = sub.lost
                await send_within(ws, json.dumps(message), SEND_TIMEOUT_S)
        except ConnectionClosed:
            pass
        finally:
            self.connections -= 1
            self.bus.unsubscribe(sub)
            await owner.cancel_tasks()

    @staticmethod
    async def _ignore_input(ws: ServerConnection, sub: Subscription[dict[str, Any]]) -> None:
        """Read (and drop) what the operator sends, so that a closed socket ends the feed."""
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass
        sub.close()
