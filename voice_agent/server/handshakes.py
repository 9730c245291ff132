"""How each kind of session begins: what its client sends first, the transport made of it, and
what watches the session on that transport's behalf.

- `/ws` (WebRTC): an `offer`, answered with an `answer`; then only `bye` may come, and a peer
  connection that fails or has not connected `connect_timeout_s` after the answer ends the
  session with `ice_failed`.
- `/pcm`: a `start` with the client's sample rate.
- `/v1/realtime` (the OpenAI Realtime API): nothing first; `?persona=` picks the persona (else
  the default; a `session.update` may change it), `?model=` is only echoed back.

Each gives a `Handshake`; the server runs the session (`voice_agent.server.app`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from voice_agent.config import Settings
from voice_agent.openai_realtime.config import SessionLink
from voice_agent.openai_realtime.conversation import RealtimeConversation
from voice_agent.openai_realtime.transport import RealtimeTransport
from voice_agent.persona import Persona, PersonaStore
from voice_agent.protocol import (
    Bye,
    Offer,
    ProtocolError,
    Start,
    error_event,
    parse_client_message,
    usable_candidates,
)
from voice_agent.records import recorded
from voice_agent.session import Session
from voice_agent.transports.base import Transport
from voice_agent.transports.pcm import PcmTransport
from voice_agent.transports.sockets import send_within
from voice_agent.transports.webrtc import WebRTCTransport

FIRST_MESSAGE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Peer:
    """What a handshake needs of the server, for one client's socket."""

    ws: ServerConnection
    settings: Settings
    personas: PersonaStore
    send_timeout_s: float
    """How long the client may take nothing of what is sent to it before it is cut off."""
    connect_timeout_s: float
    """How long a WebRTC peer may take to connect after the answer."""
    on_error: Callable[[str], None]
    """Counts a protocol error by its code."""

    def send(self, message: dict[str, Any]) -> Awaitable[None]:
        """Send one message, bounded by `send_timeout_s`."""
        return send_within(self.ws, json.dumps(message), self.send_timeout_s)

    def persona(self, pid: str | None) -> Persona:
        try:
            return self.personas.get(pid or self.settings.personas.default)
        except KeyError as exc:
            raise ProtocolError("unknown_persona", str(exc.args[0])) from None


def _no_watch(session: Session) -> None:
    return None


@dataclass(slots=True)
class Handshake:
    """A session's transport and persona, once its client has said what it wants."""

    transport: Transport
    persona: Persona
    hello: Callable[[Session], Awaitable[None]]
    """Greets the client once its session has started."""
    watch: Callable[[Session], None] = _no_watch
    """Starts what watches the session for its transport (tasks of the session)."""


async def webrtc(peer: Peer) -> Handshake:
    offer = await _first_message(peer.ws)
    if not isinstance(offer, Offer):
        raise ProtocolError("bad_message", f"expected an offer first, got '{offer.type}'")
    persona = peer.persona(offer.persona)
    audio = peer.settings.audio
    transport, answer = await WebRTCTransport.accept(
        usable_candidates(offer.sdp),
        sample_rate=audio.sample_rate,
        frame_ms=audio.output_frame_ms,
        send_json=peer.send,
        jitter_frames=peer.settings.server.webrtc_jitter_frames,
    )
    try:
        await peer.send({"type": "answer", "sdp": answer})
    except BaseException:
        await transport.close()
        raise

    def watch(session: Session) -> None:
        session.create_task(close_when(transport.gone.wait(), session), "peer")
        session.create_task(_signaling(peer, session), "signaling")
        session.create_task(_connected(peer, transport, session), "connect")

    return Handshake(transport, persona, _hello(peer, {}), watch)


async def pcm(peer: Peer) -> Handshake:
    start = await _first_message(peer.ws)
    if not isinstance(start, Start):
        raise ProtocolError("bad_message", f"expected 'start' first, got '{start.type}'")
    transport = PcmTransport(
        peer.ws,
        start.sample_rate,
        peer.settings.audio.sample_rate,
        peer.send,
        send_timeout_s=peer.send_timeout_s,
    )
    hello = _hello(peer, {"sample_rate": start.sample_rate})
    return Handshake(transport, peer.persona(start.persona), hello)


async def realtime(peer: Peer) -> Handshake:
    request = peer.ws.request
    assert request is not None
    query = parse_qs(urlsplit(request.path).query)
    persona = peer.persona(query.get("persona", [None])[0])
    model = query.get("model", ["voice-agent"])[0][:64]
    beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
    transport = RealtimeTransport(
        peer.ws,
        peer.settings.audio.sample_rate,
        beta=beta,
        max_append_bytes=peer.settings.server.max_message_bytes,
        send_timeout_s=peer.send_timeout_s,
    )

    async def hello(session: Session) -> None:
        max_ms = 1000.0 * peer.settings.audio.max_turn_s
        conversation = RealtimeConversation(
            SessionLink.of(session),
            peer.personas,
            transport.send,
            model=model,
            beta=beta,
            max_buffer_ms=max_ms,
        )
        transport.attach(conversation)

    return Handshake(transport, persona, hello)


HANDSHAKES: dict[str, Callable[[Peer], Awaitable[Handshake]]] = {
    "webrtc": webrtc,
    "pcm": pcm,
    "realtime": realtime,
}
"""By the kind of transport a session path speaks."""


async def _first_message(ws: ServerConnection) -> Offer | Start | Bye:
    try:
        async with asyncio.timeout(FIRST_MESSAGE_TIMEOUT_S):
            raw = await ws.recv()
    except TimeoutError:
        raise ProtocolError(
            "bad_message", f"no message within {FIRST_MESSAGE_TIMEOUT_S:.0f} s"
        ) from None
    if isinstance(raw, bytes):
        raise ProtocolError("bad_message", "the first message must be JSON text")
    return parse_client_message(raw)


def _hello(peer: Peer, extra: dict[str, Any]) -> Callable[[Session], Awaitable[None]]:
    """The `session` message of docs/protocol.md, with `extra` fields."""

    async def hello(session: Session) -> None:
        who = {"id": session.persona.id, "name": session.persona.name}
        what = recorded(peer.settings.records)
        await peer.send(
            {"type": "session", "id": session.id, "persona": who, "recorded": what, **extra}
        )

    return hello


async def close_when(awaitable: Awaitable[Any], session: Session) -> None:
    """End `session` once `awaitable` is done (its socket closed, its peer gone)."""
    await awaitable
    session.close()


async def _connected(peer: Peer, transport: WebRTCTransport, session: Session) -> None:
    """End the session with an `ice_failed` error if its peer connection fails, or has not
    connected `connect_timeout_s` after the answer (candidates that lead nowhere: aioice may go
    on checking them for long)."""
    pc = transport.pc
    changed = asyncio.Event()

    def on_change() -> None:
        changed.set()

    pc.on("connectionstatechange", on_change)
    try:
        async with asyncio.timeout(peer.connect_timeout_s):
            while pc.connectionState not in ("connected", "failed", "closed"):
                changed.clear()
                await changed.wait()
    except TimeoutError:
        pass
    finally:
        pc.remove_listener("connectionstatechange", on_change)
    if pc.connectionState in ("connected", "closed"):  # closed: the session is ending
        return
    why = (
        "the peer connection failed"
        if pc.connectionState == "failed"
        else f"the peer did not connect within {peer.connect_timeout_s:.0f} s of the answer"
    )
    session.fail("ice_failed", f"{why} (ICE)")


async def _signaling(peer: Peer, session: Session) -> None:
    """Messages after the offer: `bye` ends the session, anything else is an error."""
    try:
        async for raw in peer.ws:
            try:
                message = parse_client_message(raw)
                if not isinstance(message, Bye):
                    raise ProtocolError("bad_message", f"unexpected '{message.type}'")
            except ProtocolError as exc:
                peer.on_error(exc.code)
                await peer.send(error_event(exc.code, exc.message, fatal=True))
            break
    except ConnectionClosed:
        pass
    session.close()
