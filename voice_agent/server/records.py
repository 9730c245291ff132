"""`GET /sessions`, `GET /sessions/ID`, `GET /sessions/ID/audio.wav`: session records over HTTP.

Records hold people's speech, so these need the server's token even on loopback (where nothing
else does): without `server.token` they answer 403 and say to use `voice-agent sessions` on the
machine itself. The token, `Host` and `Origin` are checked before (`access`), as for every path.
Files are read in worker threads, at most `MAX_BODY_BYTES` per answer and `MAX_READS` at once;
a longer recording is fetched in pieces with `Range: bytes=START-END`.
"""

from __future__ import annotations

import asyncio
import re
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from voice_agent.records import RecordError, RecordStore
from voice_agent.records.store import TRANSCRIPT
from voice_agent.server import responses

PREFIX = "/sessions"
NO_TOKEN = "set server.token to read records over HTTP; use `voice-agent sessions` on this machine"
MAX_BODY_BYTES = 32 * 1024 * 1024
"""The most one answer carries (about 17 minutes of a stereo recording)."""
MAX_READS = 2
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def is_records_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class RecordsHttp:
    """The answers of the records' paths, for one server."""

    def __init__(self, store: RecordStore, token_set: bool) -> None:
        self.store = store
        self.token_set = token_set
        self._reads = asyncio.Semaphore(MAX_READS)

    async def answer(self, conn: ServerConnection, request: Request, path: str) -> Response:
        if not self.token_set:
            return responses.text(conn, HTTPStatus.FORBIDDEN, NO_TOKEN)
        parts = [p for p in path.removeprefix(PREFIX).split("/") if p]
        try:
            if not parts:
                listed = await asyncio.to_thread(self.store.summaries)
                return responses.json_body(conn, HTTPStatus.OK, [r.to_json() for r in listed])
            if len(parts) == 1:
                folder = await asyncio.to_thread(self.store.folder, parts[0])
                return await self._file(conn, folder / TRANSCRIPT, "application/x-ndjson", None)
            if len(parts) == 2 and parts[1] == "audio.wav":
                audio = await asyncio.to_thread(self.store.audio, parts[0])
                return await self._file(conn, audio, "audio/wav", request.headers.get("Range"))
        except RecordError as exc:
            return responses.text(conn, HTTPStatus.NOT_FOUND, str(exc))
        return responses.text(conn, HTTPStatus.NOT_FOUND, f"nothing at {path}")

    async def _file(
        self, conn: ServerConnection, path: Path, kind: str, ranged: str | None
    ) -> Response:
        size = (await asyncio.to_thread(path.stat)).st_size
        start, end = 0, size - 1
        if ranged is not None:
            m = _RANGE.match(ranged.strip())
            if m is None or (not m[1] and not m[2]):
                return responses.text(conn, HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "bad Range")
            if m[1]:
                start, end = int(m[1]), int(m[2]) if m[2] else size - 1
            else:  # the last N bytes
                start = max(0, size - int(m[2]))
            end = min(end, size - 1, start + MAX_BODY_BYTES - 1)
            if start >= size or end < start:
                return responses.text(
                    conn, HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, f"the file has {size} bytes"
                )
        elif size > MAX_BODY_BYTES:
            return responses.text(
                conn,
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"{path.name} has {size} bytes: ask for it in pieces of at most {MAX_BODY_BYTES} "
                "(Range: bytes=START-END), or use `voice-agent sessions export` on the machine",
            )
        async with self._reads:
            content = await asyncio.to_thread(_read, path, start, end - start + 1)
        if ranged is None:
            response = responses.body(conn, HTTPStatus.OK, content, kind)
        else:
            response = responses.body(conn, HTTPStatus.PARTIAL_CONTENT, content, kind)
            response.headers["Content-Range"] = f"bytes {start}-{start + len(content) - 1}/{size}"
        response.headers["Accept-Ranges"] = "bytes"
        return response


def _read(path: Path, start: int, n: int) -> bytes:
    with path.open("rb") as f:
        f.seek(start)
        return f.read(max(0, n))
