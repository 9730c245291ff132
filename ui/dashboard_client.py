"""The dashboard's link to a server: `WS /events`, reconnected with capped backoff.

`follow_events` runs until cancelled (the app's worker owns it): it connects, counts itself
connected once the server's `hello` came, hands every JSON message to `on_message`, and when
the server goes away (or cannot be reached, or refuses it) it says why and tries again after
0.5 s, 1 s, 2 s, ... at most `Backoff.cap_s`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

from voice_agent.transports.base import is_loopback


@dataclass(frozen=True, slots=True)
class Backoff:
    first_s: float = 0.5
    cap_s: float = 3.0

    def next(self, delay: float) -> float:
        return min(self.cap_s, delay * 2)


DEFAULT_BACKOFF = Backoff()


def events_url(url: str, token: str | None = None) -> str:
    """The `/events` URL of a server given as `ws://HOST:PORT` (or http://, or the full
    `/events` URL), with `?token=` added when there is one. ValueError for what cannot be one."""
    parts = urlsplit(url.strip() if "://" in url else f"ws://{url.strip()}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a server URL: {url!r} (expected ws://HOST:PORT)")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"not a server URL: {url!r} (bad port)") from None
    path = parts.path.rstrip("/")
    if not path.endswith("/events"):
        path += "/events"
    query = [(k, v) for k, v in parse_qsl(parts.query) if not (token and k == "token")]
    if token:
        query.append(("token", token))
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def shown_url(url: str) -> str:
    """The URL without its query (the token stays off the screen)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def describe(exc: BaseException) -> str:
    """Why a connection failed or ended, in a few words."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        hint = {401: " (wrong or missing token)", 403: " (host or origin refused)"}
        return f"refused: HTTP {status}{hint.get(status, '')}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


def decode(raw: str | bytes) -> dict[str, Any] | None:
    """One JSON object with a `type`, else None (binary or garbage is skipped)."""
    if isinstance(raw, bytes):
        return None
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    return message if isinstance(message, dict) and "type" in message else None


async def follow_events(
    url: str,
    *,
    on_message: Callable[[dict[str, Any]], None],
    on_trying: Callable[[], None],
    on_connected: Callable[[], None],
    on_disconnected: Callable[[str, float], None],
    backoff: Backoff = DEFAULT_BACKOFF,
) -> None:
    """Follow `url` (an `/events` URL) until cancelled; never raises for network trouble. An
    `error` without a `session` is about the feed itself (the server refused this dashboard):
    it becomes the reason given to `on_disconnected`, not a message."""
    host = urlsplit(url).hostname or ""
    delay = backoff.first_s
    while True:
        on_trying()
        refused = ""
        try:
            async with connect(
                url,
                open_timeout=5,
                ping_interval=5,
                ping_timeout=5,
                proxy=None if is_loopback(host) else True,
            ) as ws:
                async for raw in ws:
                    message = decode(raw)
                    if message is None:
                        continue
                    if message["type"] == "error" and "session" not in message:
                        refused = str(message.get("message", ""))  # the feed's own, e.g. busy
                        continue
                    if message["type"] == "hello":  # connected: the feed is ours
                        on_connected()
                        delay = backoff.first_s
                    on_message(message)
            reason = "the server closed the connection"
        except (OSError, TimeoutError, WebSocketException) as exc:
            reason = describe(exc)
        on_disconnected(f"refused: {refused}" if refused else reason, delay)
        await asyncio.sleep(delay)
        delay = backoff.next(delay)
