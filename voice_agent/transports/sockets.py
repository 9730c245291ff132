"""Sending to a client's WebSocket in bounded time.

websockets' `send` waits, without end, while the socket's buffers are full, and its `close`
waits as long for the closing handshake: a client that has stopped reading would hold whoever
sends to it (a session's playback, its events) forever. Whatever the server sends a client goes
through `send_within`: a client that leaves it untaken for `SEND_TIMEOUT_S` has its socket
closed (1008, "client is not reading"), which ends its session; `close_within` closes a socket
in bounded time even then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close
from websockets.protocol import State

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 5.0
"""How long a client may leave what was sent to it untaken (its socket's buffers full) before
its socket is closed: a client that has stopped reading would otherwise hold its session (and
the reply's playback) forever."""
CLOSE_TIMEOUT_S = 2.0
"""How long a closing handshake may take before the TCP connection is cut."""
CLOSE_POLICY = 1008
NOT_READING = "client is not reading"


async def send_within(ws: ServerConnection, message: str | bytes, timeout_s: float) -> None:
    """Send one message, which the client must take within `timeout_s`.

    websockets' `send` waits, without end, while the socket's buffers are full: a client that
    has stopped reading would hold whoever sends to it. One that has taken nothing for
    `timeout_s` has its socket closed (1008, "client is not reading"), which ends its session;
    this then raises `ConnectionClosed`, as a send on a closed socket does."""
    try:
        # (asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
        # that lands as the send completes, and the sender - playback - would go on for ever)
        async with asyncio.timeout(timeout_s):
            await ws.send(message)
    except TimeoutError:
        if ws.state is State.OPEN:  # (the path only: a query may hold the token)
            path = urlsplit(ws.request.path).path if ws.request is not None else "?"
            log.warning("a %s client took nothing for %.1f s: closing its socket", path, timeout_s)
        await close_within(ws, CLOSE_POLICY, NOT_READING)
        raise ConnectionClosedError(None, Close(CLOSE_POLICY, NOT_READING)) from None


async def close_within(
    ws: ServerConnection, code: int = 1000, reason: str = "", timeout_s: float = CLOSE_TIMEOUT_S
) -> None:
    """Close the socket with a closing handshake, or cut the TCP connection if that takes more
    than `timeout_s` (websockets' own `close` waits without end for a client that does not
    read to make room for the close frame). Idempotent; never raises."""
    try:
        async with asyncio.timeout(timeout_s):
            await ws.close(code, reason)
    except TimeoutError:
        ws.transport.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await ws.wait_closed()
