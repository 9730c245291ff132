"""One process: the browser page, WebRTC signaling, `/pcm`, `/v1/realtime`, `/personas`,
`/healthz`, `/metrics`.

`Server` answers plain HTTP GETs and WebSockets on one port (websockets' `process_request`
serves the HTTP side). Each WebSocket on `/ws`, `/pcm` or `/v1/realtime` (the OpenAI Realtime
API) is one `Session` with its own pipeline and state; the engines and their executor are
shared. See docs/protocol.md for what goes over
the wire; this module decides who may connect and owns each session's life:

- Bound to loopback (the default), any local client may connect; bound elsewhere, the server
  refuses to start without `server.token` and then checks it (in constant time) on everything
  but the page, its static files and `/healthz`.
- WebSockets that carry an `Origin` (browsers) must come from the page's own origin or from
  `server.allowed_origins`. On loopback, the `Host` must be a loopback name too, so that a web
  page on another site cannot reach the server by DNS rebinding.
- `server.max_sessions` sessions at once (the next gets a `busy` error); messages up to
  `server.max_message_bytes`; a malformed message ends only its own session.
- Every send to a session's client is bounded in time: a client that takes nothing for
  `SEND_TIMEOUT_S` (it has stopped reading) is cut off (1008) and its session ends; a WebRTC
  peer that has not connected `CONNECT_TIMEOUT_S` after the answer ends its session with an
  `ice_failed` error. docs/security.md lists every bound.
- `stop()` stops taking sessions, lets those running finish for `server.shutdown_grace_s`,
  then closes the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voice_agent.admission import session_limit
from voice_agent.backbone.realtime_client import RemoteRealtime, RemoteRealtimeError
from voice_agent.backbone.realtime_stages import connect_backbone
from voice_agent.config import Settings
from voice_agent.events import Subscription
from voice_agent.looplag import LoopLag
from voice_agent.metrics import ServerMetrics, TurnLog
from voice_agent.operators import OperatorFeed
from voice_agent.persona import Persona, PersonaStore
from voice_agent.protocol import (
    Bye,
    Offer,
    ProtocolError,
    Start,
    WireEvents,
    error_event,
    parse_client_message,
    redact,
    usable_candidates,
)
from voice_agent.realtime.config import SessionLink
from voice_agent.realtime.conversation import RealtimeConversation
from voice_agent.session import Engines, Session
from voice_agent.tasks import TaskOwner
from voice_agent.transports.base import SendJson, Transport, is_loopback
from voice_agent.transports.pcm import PcmTransport
from voice_agent.transports.realtime_api import RealtimeTransport
from voice_agent.transports.sockets import (
    CLOSE_POLICY,
    CLOSE_TIMEOUT_S,
    SEND_TIMEOUT_S,
    close_within,
    send_within,
)
from voice_agent.transports.webrtc import WebRTCTransport, ice_on_loopback, live_peer_connections

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "ui" / "web"
FIRST_MESSAGE_TIMEOUT_S = 30.0
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
PUBLIC_PATHS = ("/", "/healthz")
"""Paths that need no token: the page and its static files carry no data, and a load
balancer's health check has none to give."""
CLOSE_BUSY, CLOSE_ERROR = 1013, 1011
SESSION_PATHS = {"/ws": "webrtc", "/pcm": "pcm", "/v1/realtime": "realtime"}
"""WebSocket paths that each hold one session, and the transport they speak."""
MAX_OPERATORS = 8
"""Dashboards attached at once (`/events`)."""
ADMIT_WAIT_S = 1.5
"""How long a caller who finds every session slot taken waits for one to free before `busy`:
a person who hangs up and calls again, or reloads the page, finds the old session still
closing (its socket's close handshake)."""
CONNECT_TIMEOUT_S = 15.0
"""How long a WebRTC peer may take from the answer to a connected peer connection (ICE and
DTLS): on loopback it takes well under a second; one whose candidates lead nowhere never does."""


class ServerError(Exception):
    """The server cannot start as configured."""


def _hostname(host_header: str) -> str:
    """`127.0.0.1:8080` -> `127.0.0.1`, `[::1]:8080` -> `::1`."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if ":" in host_header else host_header


def check_binding(settings: Settings) -> bool:
    """Whether the server binds to loopback; `ServerError` if it would be reachable from other
    machines without a token."""
    cfg = settings.server
    loopback = is_loopback(cfg.host)
    if not loopback and not cfg.token:
        raise ServerError(
            f"server.host is {cfg.host}, which other machines can reach: set a token "
            "(VOICE_AGENT_SERVER__TOKEN=... or server.token) or bind to 127.0.0.1"
        )
    return loopback


class Server(TaskOwner):
    """The voice-agent server (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        engines: Engines,
        personas: PersonaStore | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        super().__init__("server")
        self.settings = settings
        self.engines = engines
        self.personas = personas or PersonaStore(settings.personas.dirs)
        self.metrics = metrics or ServerMetrics(peer_connections=live_peer_connections)
        self.metrics.watch_engines(engines.health)
        self.operators = OperatorFeed(settings.metrics.turns_kept)
        path = settings.metrics.jsonl_path
        self.turn_log = TurnLog(path) if path is not None else None
        self.loop_lag = LoopLag(on_sample=self.metrics.loop_lag.observe)
        self.session_limit = session_limit(settings)
        self.sessions: dict[str, Session] = {}
        self._slots = 0
        """Connections holding a place: sessions running and those still being set up."""
        self._slot_freed = asyncio.Event()
        self._draining = False
        self._all_ended = asyncio.Event()
        self._ws: WsServer | None = None
        self._sockets: set[ServerConnection] = set()
        """Every WebSocket being served (sessions and dashboards)."""
        self.loopback = check_binding(settings)
        self.send_timeout_s = SEND_TIMEOUT_S
        """How long a client may take nothing of what is sent to it before it is cut off."""
        self.connect_timeout_s = CONNECT_TIMEOUT_S
        """How long a WebRTC peer may take to connect after the answer."""

    # --- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.settings.server
        ice_on_loopback(self.loopback)
        self.create_task(self.loop_lag.run(), "loop-lag")
        if self.turn_log is not None:
            await self.turn_log.start()
        self._ws = await serve(
            self._handle,
            cfg.host,
            cfg.port,
            process_request=self._process_request,
            max_size=cfg.max_message_bytes,
            max_queue=32,
            server_header="voice-agent",
            open_timeout=10,
            close_timeout=CLOSE_TIMEOUT_S,
        )

    @property
    def port(self) -> int:
        assert self._ws is not None, "start() first"
        return int(self._ws.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = self.settings.server.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop taking sessions; let each running one finish the reply in progress (for up to
        `grace_s`, default `server.shutdown_grace_s`), then close whatever is left."""
        if self._ws is None:
            return
        self._draining = True
        self._ws.close(close_connections=False)
        grace = self.settings.server.shutdown_grace_s if grace_s is None else grace_s
        for session in list(self.sessions.values()):
            session.finish()
        if self.sessions:
            self._all_ended.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._all_ended.wait()
        for session in list(self.sessions.values()):
            session.close()
        self.operators.close()  # dashboards too: websockets closes a server's sockets only once
        self._ws.close(close_connections=True)
        try:
            async with asyncio.timeout(2 * CLOSE_TIMEOUT_S):
                await self._ws.wait_closed()
        except TimeoutError:  # a client that does not read holds its close frame: cut it
            for ws in list(self._sockets):
                ws.transport.abort()
            await self._ws.wait_closed()
        self._ws = None
        if self.turn_log is not None:
            await self.turn_log.close()
        await self.cancel_tasks()

    # --- HTTP ----------------------------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path
        cfg = self.settings.server
        host = request.headers.get("Host", "")
        if self.loopback and not is_loopback(_hostname(host)):
            return self._text(conn, HTTPStatus.FORBIDDEN, f"unexpected Host {host!r}")
        public = path in PUBLIC_PATHS or path.startswith("/static/")
        if cfg.token and not public and not self._token_ok(request, url.query, cfg.token):
            return self._text(conn, HTTPStatus.UNAUTHORIZED, "a valid token is required")
        if path in SESSION_PATHS or path == "/events":
            origin = request.headers.get("Origin")
            allowed = {f"http://{host}", f"https://{host}", *cfg.allowed_origins}
            if origin is not None and origin not in allowed:
                self.metrics.rejected("origin")
                return self._text(conn, HTTPStatus.FORBIDDEN, f"origin {origin!r} not allowed")
            return None  # on with the WebSocket handshake
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return self._text(conn, HTTPStatus.NOT_FOUND, f"no WebSocket at {path}")
        if path == "/healthz":
            status = HTTPStatus.SERVICE_UNAVAILABLE if self._draining else HTTPStatus.OK
            body = {
                "status": "draining" if self._draining else "ok",
                "sessions": len(self.sessions),
                "max_sessions": self.session_limit.sessions,
                "engines": self.engines.health(),
                "loop_lag_ms": self.loop_lag.summary_ms(),
            }
            return self._json(conn, status, body)
        if path == "/metrics":
            return self._body(conn, HTTPStatus.OK, self.metrics.render(), self.metrics.content_type)
        if path == "/personas":
            return self._json(conn, HTTPStatus.OK, self._persona_list())
        if path == "/":
            return self._static(conn, "index.html")
        if path.startswith("/static/"):
            return self._static(conn, path.removeprefix("/static/"))
        return self._text(conn, HTTPStatus.NOT_FOUND, f"nothing at {path}")

    @staticmethod
    def _token_ok(request: Request, query: str, token: str) -> bool:
        given = parse_qs(query).get("token", [""])[0]
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth.removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), token.encode())

    def _persona_list(self) -> list[dict[str, Any]]:
        default = self.settings.personas.default
        out = []
        for pid, _path, persona, _error in self.personas.status():
            if persona is not None:
                out.append(
                    {
                        "id": pid,
                        "name": persona.name,
                        "description": persona.description,
                        "default": pid == default,
                    }
                )
        return out

    def _static(self, conn: ServerConnection, name: str) -> Response:
        # Only plain names of files that are in the folder: no sub-paths, no dot files.
        if "/" in name or "\\" in name or name.startswith(".") or not name:
            return self._text(conn, HTTPStatus.NOT_FOUND, "no such file")
        path = WEB_DIR / name
        if not path.is_file():
            return self._text(conn, HTTPStatus.NOT_FOUND, "no such file")
        kind = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        return self._body(conn, HTTPStatus.OK, path.read_bytes(), kind)

    def _json(self, conn: ServerConnection, status: HTTPStatus, data: Any) -> Response:
        return self._body(conn, status, json.dumps(data).encode(), "application/json")

    def _text(self, conn: ServerConnection, status: HTTPStatus, text: str) -> Response:
        return self._body(conn, status, f"{text}\n".encode(), "text/plain; charset=utf-8")

    @staticmethod
    def _body(conn: ServerConnection, status: HTTPStatus, body: bytes, kind: str) -> Response:
        response = conn.respond(status, "")
        headers = response.headers
        for name in ("Content-Type", "Content-Length"):
            del headers[name]
        headers["Content-Type"] = kind
        headers["Content-Length"] = str(len(body))
        headers["Cache-Control"] = "no-cache"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        return dataclasses.replace(response, body=body)

    # --- sessions ------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        self._sockets.add(ws)
        try:
            await self._serve(ws)
        finally:
            self._sockets.discard(ws)

    async def _serve(self, ws: ServerConnection) -> None:
        path = urlsplit(ws.request.path if ws.request else "").path
        if path == "/events":
            await self._events(ws)
            return
        kind = SESSION_PATHS[path]  # `_process_request` let only these (and /events) through
        if not await self._admit():
            self.metrics.rejected("busy")
            why = "shutting down" if self._draining else "too many sessions"
            await self._refuse(
                ws, "busy", f"the server is busy ({why}); try again later", CLOSE_BUSY
            )
            return
        try:
            if kind == "webrtc":
                await self._webrtc(ws)
            elif kind == "realtime":
                await self._realtime(ws)
            else:
                await self._pcm(ws)
        except ProtocolError as exc:
            self.metrics.error(exc.code)
            await self._refuse(ws, exc.code, exc.message, CLOSE_POLICY)
        except ConnectionClosed:
            pass  # the client went away while the session was being set up
        except Exception:
            log.exception("%s session failed", kind)
            self.metrics.error("internal")
            await self._refuse(ws, "internal", "internal error; see the server log", CLOSE_ERROR)
        finally:
            self._slots -= 1
            self._slot_freed.set()

    async def _admit(self) -> bool:
        """Take a session slot, waiting up to `ADMIT_WAIT_S` for one; False when none freed
        (or the server is draining)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ADMIT_WAIT_S
        while not self._draining and self._slots >= self.session_limit.sessions:
            if loop.time() >= deadline:
                return False
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._slot_freed.wait()
        if self._draining:
            return False
        self._slots += 1
        return True

    async def _events(self, ws: ServerConnection) -> None:
        if self.operators.connections >= MAX_OPERATORS:
            self.metrics.rejected("busy")
            why = f"at most {MAX_OPERATORS} dashboards at once"
            await self._refuse(ws, "busy", why, CLOSE_BUSY)
            return
        await self.operators.serve(ws, self.session_limit.sessions)

    async def _refuse(self, ws: ServerConnection, code: str, message: str, close: int) -> None:
        with contextlib.suppress(ConnectionClosed):
            await send_within(
                ws, json.dumps(error_event(code, message, fatal=True)), self.send_timeout_s
            )
        await close_within(ws, close, code)

    async def _first_message(self, ws: ServerConnection) -> Offer | Start | Bye:
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

    def _persona(self, pid: str | None) -> Persona:
        try:
            return self.personas.get(pid or self.settings.personas.default)
        except KeyError as exc:
            raise ProtocolError("unknown_persona", str(exc.args[0])) from None

    def _sender(self, ws: ServerConnection) -> SendJson:
        """How a session's events reach its client: bounded by `send_timeout_s`."""

        async def send_json(message: dict[str, Any]) -> None:
            await send_within(ws, json.dumps(message), self.send_timeout_s)

        return send_json

    async def _webrtc(self, ws: ServerConnection) -> None:
        offer = await self._first_message(ws)
        if not isinstance(offer, Offer):
            raise ProtocolError("bad_message", f"expected an offer first, got '{offer.type}'")
        persona = self._persona(offer.persona)
        send = self._sender(ws)
        transport, answer = await WebRTCTransport.accept(
            usable_candidates(offer.sdp),
            sample_rate=self.settings.audio.sample_rate,
            frame_ms=self.settings.audio.output_frame_ms,
            send_json=send,
            jitter_frames=self.settings.server.webrtc_jitter_frames,
        )
        try:
            await send({"type": "answer", "sdp": answer})
        except BaseException:
            await transport.close()
            raise
        await self._converse(
            ws, transport, persona, "webrtc", self._hello(ws, {}), transport.gone.wait()
        )

    async def _pcm(self, ws: ServerConnection) -> None:
        start = await self._first_message(ws)
        if not isinstance(start, Start):
            raise ProtocolError("bad_message", f"expected 'start' first, got '{start.type}'")
        persona = self._persona(start.persona)
        transport = PcmTransport(
            ws,
            start.sample_rate,
            self.settings.audio.sample_rate,
            self._sender(ws),
            send_timeout_s=self.send_timeout_s,
        )
        hello = self._hello(ws, {"sample_rate": start.sample_rate})
        await self._converse(ws, transport, persona, "pcm", hello)

    async def _realtime(self, ws: ServerConnection) -> None:
        """The OpenAI Realtime API: `?persona=` picks the persona (else the default; a
        `session.update` may change it), `?model=` is only echoed back."""
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        persona = self._persona(query.get("persona", [None])[0])
        model = query.get("model", ["voice-agent"])[0][:64]
        beta = "realtime=v1" in ws.request.headers.get("OpenAI-Beta", "")
        transport = RealtimeTransport(
            ws,
            self.settings.audio.sample_rate,
            beta=beta,
            max_append_bytes=self.settings.server.max_message_bytes,
            send_timeout_s=self.send_timeout_s,
        )

        async def hello(session: Session) -> None:
            max_ms = 1000.0 * self.settings.audio.max_turn_s
            link = SessionLink.of(session)
            conversation = RealtimeConversation(
                link, self.personas, transport.send, model=model, beta=beta, max_buffer_ms=max_ms
            )
            transport.attach(conversation)

        await self._converse(ws, transport, persona, "realtime", hello)

    async def _converse(
        self,
        ws: ServerConnection,
        transport: Transport,
        persona: Persona,
        kind: str,
        hello: Callable[[Session], Awaitable[None]],
        gone: Awaitable[Any] | None = None,
    ) -> None:
        """Run one session until it ends, the socket closes or the peer is gone; `hello`
        greets the client once the session has started."""
        try:
            remote = await self._backbone(persona)
            session = Session(self.settings, persona, transport, self.engines, remote=remote)
        except BaseException:
            await transport.close()
            raise
        who = {"id": persona.id, "name": persona.name}
        # The observer outlives the session by a little: it reads the session's last events
        # (the last turn's record) after the session has closed its event bus.
        observer = self.create_task(self._observe(session.id, session.events()), "observe")
        async with session:
            self.sessions[session.id] = session
            self.metrics.session_started(kind)
            self.operators.session_started(session.id, who, kind)
            try:
                await hello(session)
                session.create_task(self._close_when(ws.wait_closed(), session), "socket")
                if gone is not None:
                    session.create_task(self._close_when(gone, session), "peer")
                if isinstance(transport, WebRTCTransport):
                    session.create_task(self._signaling(ws, session), "signaling")
                    session.create_task(self._connected(transport, session), "connect")
                await session.run()
            finally:
                del self.sessions[session.id]
                self.operators.session_ended(session.id)
                if not self.sessions:
                    self._all_ended.set()
                self.metrics.session_ended(kind)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await observer
        await close_within(ws)

    async def _backbone(self, persona: Persona) -> RemoteRealtime | None:
        """The remote realtime service a session speaks through, if that is the backbone."""
        if self.settings.engines.backbone != "realtime":
            return None
        try:
            return await connect_backbone(self.settings, persona)
        except RemoteRealtimeError as exc:
            message = redact(str(exc))
            log.warning("%s", message)
            raise ProtocolError("backbone_unavailable", message) from None

    def _hello(
        self, ws: ServerConnection, extra: dict[str, Any]
    ) -> Callable[[Session], Awaitable[None]]:
        """The `session` message of docs/protocol.md, with `extra` fields."""

        async def hello(session: Session) -> None:
            who = {"id": session.persona.id, "name": session.persona.name}
            await self._sender(ws)({"type": "session", "id": session.id, "persona": who, **extra})

        return hello

    async def _observe(self, session: str, events: Subscription) -> None:
        """What a session's client sees goes to Prometheus and the operators too; each turn's
        whole timeline, once the reply is over, to the turn log."""
        wire = WireEvents()
        async for event in events:
            if event.type == "turn_record":
                if self.turn_log is not None:
                    self.turn_log.write(event.data)
                continue
            for message in wire.translate(event):
                self.metrics.observe(message)
                self.operators.publish(session, message)

    @staticmethod
    async def _close_when(awaitable: Awaitable[Any], session: Session) -> None:
        await awaitable
        session.close()

    async def _connected(self, transport: WebRTCTransport, session: Session) -> None:
        """End the session with an `ice_failed` error if its peer connection fails, or has not
        connected `connect_timeout_s` after the answer (candidates that lead nowhere: aioice
        may go on checking them for long)."""
        pc = transport.pc
        changed = asyncio.Event()

        def on_change() -> None:
            changed.set()

        pc.on("connectionstatechange", on_change)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
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
            else f"the peer did not connect within {self.connect_timeout_s:.0f} s of the answer"
        )
        session.fail("ice_failed", f"{why} (ICE)")

    async def _signaling(self, ws: ServerConnection, session: Session) -> None:
        """Messages after the offer: `bye` ends the session, anything else is an error."""
        try:
            async for raw in ws:
                try:
                    message = parse_client_message(raw)
                    if not isinstance(message, Bye):
                        raise ProtocolError("bad_message", f"unexpected '{message.type}'")
                except ProtocolError as exc:
                    self.metrics.error(exc.code)
                    event = error_event(exc.code, exc.message, fatal=True)
                    await send_within(ws, json.dumps(event), self.send_timeout_s)
                break
        except ConnectionClosed:
            pass
        session.close()


async def run_server(settings: Settings) -> None:
    """`voice-agent serve`: load the engines, serve until SIGINT or SIGTERM, shut down."""
    from voice_agent.backbone.factory import load_engines
    from voice_agent.enginecheck import ensure_engines_run

    check_binding(settings)
    personas = PersonaStore(settings.personas.dirs)
    personas.get(settings.personas.default)  # a missing default persona stops us now
    await asyncio.to_thread(ensure_engines_run, settings)  # a crash here would end us unsaid
    log.info("loading the models (the first time, split models are joined and verified)")
    engines = await asyncio.to_thread(load_engines, settings)
    try:
        server = Server(settings, engines, personas)
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        limit = server.session_limit
        log.info("up to %d sessions at once (%s)", limit.sessions, limit.why)
        print(f"voice-agent: serving on {server.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        await stop.wait()
        log.info("stopping: %d sessions get %.0f s to finish", len(server.sessions),
                 settings.server.shutdown_grace_s)  # fmt: skip
        await server.stop()
    finally:
        engines.close()
