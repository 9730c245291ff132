"""Who may reach the server: where it binds, the token, the `Host` and the `Origin`.

- Bound to loopback (the default), any local client may connect; bound elsewhere, the server
  refuses to start without `server.token` and then checks it (in constant time) on everything
  but the page, its static files and `/healthz`.
- WebSockets that carry an `Origin` (browsers) must come from the page's own origin or from
  `server.allowed_origins`. On loopback, the `Host` must be a loopback name too, so that a web
  page on another site cannot reach the server by DNS rebinding.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs

from websockets.http11 import Request

from voice_agent.config import ServerSettings, Settings
from voice_agent.transports.base import is_loopback

PUBLIC_PATHS = ("/", "/healthz")
"""Paths that need no token: the page and its static files carry no data, and a load
balancer's health check has none to give."""


class ServerError(Exception):
    """The server cannot start as configured."""


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


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused, as its HTTP answer."""

    status: HTTPStatus
    text: str
    reason: str = ""
    """The `rejected` metric's reason ("" when it is not counted)."""


class Access:
    """The checks every request goes through before it is served."""

    def __init__(self, cfg: ServerSettings, loopback: bool) -> None:
        self.cfg = cfg
        self.loopback = loopback

    def refusal(self, request: Request, path: str, query: str, websocket: bool) -> Refusal | None:
        """Why `request` (for `path`, with `query`; `websocket`: a path that holds a WebSocket)
        may not be served, or None."""
        host = request.headers.get("Host", "")
        if self.loopback and not is_loopback(_hostname(host)):
            return Refusal(HTTPStatus.FORBIDDEN, f"unexpected Host {host!r}")
        public = path in PUBLIC_PATHS or path.startswith("/static/")
        if self.cfg.token and not public and not _token_ok(request, query, self.cfg.token):
            return Refusal(HTTPStatus.UNAUTHORIZED, "a valid token is required")
        if websocket:
            origin = request.headers.get("Origin")
            allowed = {f"http://{host}", f"https://{host}", *self.cfg.allowed_origins}
            if origin is not None and origin not in allowed:
                return Refusal(HTTPStatus.FORBIDDEN, f"origin {origin!r} not allowed", "origin")
        return None


def _hostname(host_header: str) -> str:
    """`127.0.0.1:8080` -> `127.0.0.1`, `[::1]:8080` -> `::1`."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if ":" in host_header else host_header


def _token_ok(request: Request, query: str, token: str) -> bool:
    given = parse_qs(query).get("token", [""])[0]
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        given = auth.removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), token.encode())
