"""The server: one port for the browser page, WebRTC signaling, `/pcm`, `/v1/realtime`,
`/personas`, `/healthz`, `/metrics` and the operators' `/events`.

`Server` answers plain HTTP GETs and WebSockets on one port (websockets' `process_request`
serves the HTTP side). Each WebSocket on `/ws`, `/pcm` or `/v1/realtime` (the OpenAI Realtime
API) is one `Session` with its own pipeline and state; the engines and their executor are
shared. See docs/protocol.md for what goes over the wire. This module owns each session's life;
its neighbours decide the rest:

- `access`: who may connect (binding, token, `Host`, `Origin`);
- `voice_agent.admission`: how many sessions at once (`server.max_sessions`; the next waits a
  moment, then gets a `busy` error), and none once the server is stopping;
- `handshakes`: how each kind of session begins;
- `responses`: the plain HTTP answers.

Messages are bounded by `server.max_message_bytes`; a malformed message ends only its own
session. Every send to a session's client is bounded in time: a client that takes nothing for
`SEND_TIMEOUT_S` (it has stopped reading) is cut off (1008) and its session ends; a WebRTC peer
that has not connected `CONNECT_TIMEOUT_S` after the answer ends its session with an
`ice_failed` error. docs/security.md lists every bound. `stop()` stops taking sessions, lets
those running finish for `server.shutdown_grace_s`, then closes the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Awaitable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server as WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voice_agent.admission import Admission, session_limit
from voice_agent.backbone.backbone import Backbone
from voice_agent.backbone.realtime_client import RemoteRealtimeError
from voice_agent.config import Settings
from voice_agent.engines import Engines
from voice_agent.eventbus import Subscription
from voice_agent.events import AssistantSaid, ClientMessage, Event, TurnRecord
from voice_agent.looplag import LoopLag
from voice_agent.metrics import ServerMetrics, TurnLog
from voice_agent.operators import OperatorFeed
from voice_agent.persona import Persona, PersonaStore
from voice_agent.protocol import ProtocolError, error_event, redact
from voice_agent.records import Records
from voice_agent.records.recorder import CLOSE_TIMEOUT_S as RECORD_CLOSE_TIMEOUT_S
from voice_agent.server import responses
from voice_agent.server.access import Access, check_binding
from voice_agent.server.handshakes import HANDSHAKES, Handshake, Peer, close_when
from voice_agent.server.records import RecordsHttp, is_records_path
from voice_agent.session import Session
from voice_agent.tasks import TaskOwner
from voice_agent.transports.sockets import (
    CLOSE_POLICY,
    CLOSE_TIMEOUT_S,
    SEND_TIMEOUT_S,
    close_within,
    send_within,
)
from voice_agent.transports.webrtc import ice_on_loopback, live_peer_connections

log = logging.getLogger(__name__)

CLOSE_BUSY, CLOSE_ERROR = 1013, 1011
SESSION_PATHS = {"/ws": "webrtc", "/pcm": "pcm", "/v1/realtime": "realtime"}
"""WebSocket paths that each hold one session, and the transport they speak."""
MAX_OPERATORS = 8
"""Dashboards attached at once (`/events`)."""
CONNECT_TIMEOUT_S = 15.0
"""How long a WebRTC peer may take from the answer to a connected peer connection (ICE and
DTLS): on loopback it takes well under a second; one whose candidates lead nowhere never does."""


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
        self.records = Records(settings.records)
        """Session records (off unless `records.enabled`), and `GET /sessions...` to read them."""
        self.records_http = RecordsHttp(self.records.store, bool(settings.server.token))
        self.session_limit = session_limit(settings)
        self.admission = Admission(self.session_limit)
        self.sessions: dict[str, Session] = {}
        self._all_ended = asyncio.Event()
        self._ws: WsServer | None = None
        self._sockets: set[ServerConnection] = set()
        """Every WebSocket being served (sessions and dashboards)."""
        self.loopback = check_binding(settings)
        self.access = Access(settings.server, self.loopback)
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
        self.records.start()
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
        self.admission.drain()
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
        await self.records.close()
        await self.cancel_tasks()

    # --- HTTP ----------------------------------------------------------------------------------

    def _process_request(
        self, conn: ServerConnection, request: Request
    ) -> Response | Awaitable[Response] | None:
        url = urlsplit(request.path)
        path = url.path
        websocket = path in SESSION_PATHS or path == "/events"
        refusal = self.access.refusal(request, path, url.query, websocket)
        if refusal is not None:
            if refusal.reason:
                self.metrics.rejected(refusal.reason)
            return responses.text(conn, refusal.status, refusal.text)
        if websocket:
            return None  # on with the WebSocket handshake
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return responses.text(conn, HTTPStatus.NOT_FOUND, f"no WebSocket at {path}")
        if path == "/healthz":
            draining = self.admission.draining
            body = {
                "status": "draining" if draining else "ok",
                "sessions": len(self.sessions),
                "max_sessions": self.session_limit.sessions,
                "engines": self.engines.health(),
                "loop_lag_ms": self.loop_lag.summary_ms(),
            }
            status = HTTPStatus.SERVICE_UNAVAILABLE if draining else HTTPStatus.OK
            return responses.json_body(conn, status, body)
        if path == "/metrics":
            metrics = self.metrics.render()
            return responses.body(conn, HTTPStatus.OK, metrics, self.metrics.content_type)
        if path == "/personas":
            return responses.json_body(conn, HTTPStatus.OK, self._persona_list())
        if is_records_path(path):
            return self.records_http.answer(conn, request, path)
        if path == "/":
            return responses.static(conn, "index.html")
        if path.startswith("/static/"):
            return responses.static(conn, path.removeprefix("/static/"))
        return responses.text(conn, HTTPStatus.NOT_FOUND, f"nothing at {path}")

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
        if not await self.admission.admit():
            self.metrics.rejected("busy")
            why = "shutting down" if self.admission.draining else "too many sessions"
            await self._refuse(
                ws, "busy", f"the server is busy ({why}); try again later", CLOSE_BUSY
            )
            return
        try:
            await self._converse(ws, await HANDSHAKES[kind](self._peer(ws)), kind)
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
            self.admission.release()

    def _peer(self, ws: ServerConnection) -> Peer:
        return Peer(
            ws,
            self.settings,
            self.personas,
            self.send_timeout_s,
            self.connect_timeout_s,
            self.metrics.error,
        )

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

    async def _converse(self, ws: ServerConnection, handshake: Handshake, kind: str) -> None:
        """Run one session until it ends, the socket closes or the peer is gone."""
        persona = handshake.persona
        recorder = self.records.recorder()
        transport = recorder.wrap(handshake.transport) if recorder else handshake.transport
        try:
            backbone = await self._backbone(persona)
        except BaseException:
            await transport.close()
            raise
        try:
            session = Session(
                self.settings,
                persona,
                transport,
                self.engines,
                backbone=backbone,
                hosted=kind != "realtime",  # (a Realtime client drives its own session)
            )
        except BaseException:
            await backbone.aclose()
            await transport.close()
            raise
        who = {"id": persona.id, "name": persona.name}
        # The observer outlives the session by a little: it reads the session's last events
        # (the last turn's record) after the session has closed its event bus.
        observer = self.create_task(self._observe(session.id, session.events()), "observe")
        recording = self.create_task(recorder.run(session.events()), "record") if recorder else None
        async with session:
            self.sessions[session.id] = session
            self.metrics.session_started(kind)
            self.operators.session_started(session.id, who, kind)
            try:
                await handshake.hello(session)
                session.create_task(close_when(ws.wait_closed(), session), "socket")
                handshake.watch(session)
                await session.run()
            finally:
                del self.sessions[session.id]
                self.operators.session_ended(session.id)
                if not self.sessions:
                    self._all_ended.set()
                self.metrics.session_ended(kind, session.end_reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await observer
        if recording is not None:  # it writes what is left once the session's events end
            await asyncio.wait({recording}, timeout=RECORD_CLOSE_TIMEOUT_S)
        await close_within(ws)

    async def _backbone(self, persona: Persona) -> Backbone:
        """What a session with `persona` speaks through; a remote one that cannot be reached is
        the client's `backbone_unavailable` error."""
        try:
            return await self.engines.backbone(self.settings, persona)
        except RemoteRealtimeError as exc:
            message = redact(str(exc))
            log.warning("%s", message)
            raise ProtocolError("backbone_unavailable", message) from None

    async def _observe(self, session: str, events: Subscription[Event]) -> None:
        """What a session's client sees goes to Prometheus and the operators too; each turn's
        whole timeline, once the reply is over, to the turn log."""
        async for event in events:
            if isinstance(event, TurnRecord) and self.turn_log is not None:
                self.turn_log.write(event.data)
            elif isinstance(event, AssistantSaid) and event.why == "reprompt":
                self.metrics.reprompts.inc()
            elif isinstance(event, ClientMessage):
                self.metrics.observe(event.message)
                self.operators.publish(session, event.message)


async def run_server(settings: Settings) -> None:
    """`voice-agent serve`: load the engines, serve until SIGINT or SIGTERM, shut down."""
    from voice_agent.enginecheck import ensure_engines_run
    from voice_agent.engines import load_engines

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
