"""The transport interface a Session talks through."""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from voice_agent.audio.playback import AudioSink
from voice_agent.events import ClientMessage, Event
from voice_agent.frames import Frame

SendJson = Callable[[dict[str, Any]], Awaitable[None]]
"""How a network transport sends one JSON message (an event) to its peer."""


class Transport(ABC):
    """Audio in (as frames), audio out (a paced sink), events out.

    `frames()` yields what the peer sends (mostly `AudioFrame`s at the pipeline's rate) and
    returns when the peer has gone; the session then ends the pipeline. `close()` releases
    everything the transport holds and is safe to call more than once.
    """

    sink: AudioSink

    @abstractmethod
    def frames(self) -> AsyncIterator[Frame]:
        """Frames from the peer, until it goes away."""

    async def send_event(self, event: Event) -> None:  # noqa: B027 - optional hook
        """Deliver one session event to the peer (a browser shows transcripts, state, latency)."""

    @abstractmethod
    async def close(self) -> None:
        """Release sockets, tracks, devices. Idempotent."""


class PeerTransport(Transport):
    """A transport to a client of the wire protocol (docs/protocol.md): the session's client
    messages (`ClientMessage` events) go to it through `send_json`."""

    def __init__(self, send_json: SendJson) -> None:
        self._send_json = send_json

    async def send_event(self, event: Event) -> None:
        if isinstance(event, ClientMessage):
            await self._send_json(event.message)


def is_loopback(host: str) -> bool:
    """`localhost`, 127.x.y.z, ::1 (with or without brackets)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
