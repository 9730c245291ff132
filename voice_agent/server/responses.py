"""The server's plain HTTP answers: the page's static files, JSON and text."""

from __future__ import annotations

import dataclasses
import json
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

WEB_DIR = Path(__file__).resolve().parent.parent / "ui" / "web"
"""The browser page and its files."""

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}


def static(conn: ServerConnection, name: str) -> Response:
    """The page's file `name`; only plain names of files in the folder (no sub-paths, no dot
    files)."""
    if "/" in name or "\\" in name or name.startswith(".") or not name:
        return text(conn, HTTPStatus.NOT_FOUND, "no such file")
    path = WEB_DIR / name
    if not path.is_file():
        return text(conn, HTTPStatus.NOT_FOUND, "no such file")
    kind = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    return body(conn, HTTPStatus.OK, path.read_bytes(), kind)


def json_body(conn: ServerConnection, status: HTTPStatus, data: Any) -> Response:
    return body(conn, status, json.dumps(data).encode(), "application/json")


def text(conn: ServerConnection, status: HTTPStatus, message: str) -> Response:
    return body(conn, status, f"{message}\n".encode(), "text/plain; charset=utf-8")


def body(conn: ServerConnection, status: HTTPStatus, content: bytes, kind: str) -> Response:
    """An answer with `content` of type `kind`, never cached, never framed, never sniffed."""
    response = conn.respond(status, "")
    headers = response.headers
    for name in ("Content-Type", "Content-Length"):
        del headers[name]
    headers["Content-Type"] = kind
    headers["Content-Length"] = str(len(content))
    headers["Cache-Control"] = "no-cache"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    return dataclasses.replace(response, body=content)
