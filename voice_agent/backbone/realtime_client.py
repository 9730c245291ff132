"""A connection to a remote OpenAI-Realtime-compatible service (GA event names).

`RemoteRealtime.connect` opens the WebSocket, configures the session (pcm16 at 24 kHz both
ways, the remote's own turn detection off: ours decides) and starts a reader task that routes
server events: those of a response to its `RemoteResponse` (bound by `response.created`, then
by response id, so a cancelled response's late events go nowhere), an `error` to the response
it concerns or to the log. `voice_agent.backbone.realtime_stages` puts it in a pipeline.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
from collections import deque
from typing import Any
from urllib.parse import urlencode

import numpy as np
import soxr
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from voice_agent.frames import (
    PCM,
)
from voice_agent.tasks import TaskOwner

log = logging.getLogger(__name__)

INPUT_RATE = 16000
"""What `RemoteRealtime.append` takes (the pipeline's rate)."""
REMOTE_RATE = 24000
"""What the remote hears and speaks (`audio/pcm`)."""
MAX_MESSAGE = 16 * 2**20
SEND_TIMEOUT_S = 5.0
"""A send the remote has not taken in this long (its socket is stalled): the connection is
given up, rather than holding the pipeline (appends are sent from a stage's input task)."""
MAX_EVENTS = 4096
"""Events a response holds unread; past that it fails (its consumer is stuck)."""

AUDIO_DELTA = ("response.output_audio.delta", "response.audio.delta")
TRANSCRIPT_DELTA = ("response.output_audio_transcript.delta", "response.audio_transcript.delta")


class RemoteRealtimeError(Exception):
    """The remote refused, failed, or did not answer."""


class RemoteConnectionLost(RemoteRealtimeError):
    """The connection to the remote is gone."""


class RemoteResponse:
    """The server events of one requested response, in order (`RemoteRealtime.create_response`)."""

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        """The `response.create` that asked for it."""
        self.id: str | None = None
        """The remote's id for it, once `response.created` has come."""
        self.released = False
        self._events: deque[dict[str, Any]] = deque()
        self._ready = asyncio.Event()
        self._error: RemoteRealtimeError | None = None

    def deliver(self, event: dict[str, Any]) -> None:
        if len(self._events) >= MAX_EVENTS:
            self.fail(RemoteRealtimeError("the reply's events piled up unread"))
        else:
            self._events.append(event)
            self._ready.set()

    def fail(self, error: RemoteRealtimeError) -> None:
        """End the response: `get` raises `error` once the events before it are read."""
        self._error = self._error or error
        self._ready.set()

    async def get(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The next event; the failure once events run out; TimeoutError after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            while not self._events and self._error is None:
                self._ready.clear()
                await self._ready.wait()
        if self._events:
            return self._events.popleft()
        assert self._error is not None
        raise self._error


class RemoteRealtime(TaskOwner):
    """One connection to a remote Realtime service (see the module docstring)."""

    def __init__(self, ws: ClientConnection, url: str) -> None:
        super().__init__("realtime")
        self.url = url
        self._ws = ws
        self._resampler = soxr.ResampleStream(INPUT_RATE, REMOTE_RATE, 1, dtype="int16")
        self.uncommitted = 0
        """Samples (24 kHz) appended since the last commit."""
        self._ids = itertools.count(1)
        self._pending: deque[RemoteResponse] = deque()
        self._responses: dict[str, RemoteResponse] = {}
        self._current: RemoteResponse | None = None
        self.closed = asyncio.Event()
        """Set when the connection is gone, whoever closed it."""
        self.closing = False
        """`close` was called (as opposed to the remote or the network ending it)."""
        self.close_reason = ""

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        instructions: str = "",
        voice: str | None = None,
        timeout_s: float = 10.0,
    ) -> RemoteRealtime:
        """Connect, configure the session (audio in and out at 24 kHz, no server turn detection)
        and start reading; `RemoteRealtimeError` naming the URL if any of it fails."""
        if model:
            url += ("&" if "?" in url else "?") + urlencode({"model": model})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        ws: ClientConnection | None = None
        try:
            async with asyncio.timeout(timeout_s):
                ws = await ws_connect(
                    url,
                    additional_headers=headers,
                    max_size=MAX_MESSAGE,
                    open_timeout=None,
                    close_timeout=2,
                )
                conn = cls(ws, url)
                await conn._expect("session.created")
                await conn._send(_session_update(instructions, voice))
                await conn._expect("session.updated")
        except BaseException as exc:
            if ws is not None:
                await ws.close()
            if isinstance(exc, TimeoutError):
                raise RemoteRealtimeError(
                    f"realtime remote {url}: no answer in {timeout_s:g} s"
                ) from None
            if isinstance(exc, OSError | WebSocketException):
                raise RemoteRealtimeError(
                    f"cannot connect to realtime remote {url}: {exc}"
                ) from exc
            raise
        conn.create_task(conn._read(), "reader")
        return conn

    async def _expect(self, kind: str) -> None:
        """Read handshake events until `kind` (before the reader task runs)."""
        while True:
            try:
                event = json.loads(await self._ws.recv())
            except ConnectionClosed as exc:
                raise RemoteRealtimeError(f"realtime remote {self.url} closed: {exc}") from exc
            except ValueError:
                raise RemoteRealtimeError(f"realtime remote {self.url} sent no JSON") from None
            if event.get("type") == kind:
                return
            if event.get("type") == "error":
                raise RemoteRealtimeError(f"realtime remote {self.url}: {_message(event)}")

    # --- client events -------------------------------------------------------------------

    async def _send(self, event: dict[str, Any]) -> str:
        if self.closed.is_set():
            raise RemoteConnectionLost(self.close_reason)
        event_id: str = event.setdefault("event_id", f"va_{next(self._ids)}")
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await self._ws.send(json.dumps(event))
        except ConnectionClosed as exc:
            raise RemoteConnectionLost(f"realtime remote {self.url} closed: {exc}") from exc
        except TimeoutError:
            reason = f"it took nothing for {SEND_TIMEOUT_S:g} s"
            self._lost(reason)
            self._ws.transport.abort()  # (the reader then ends; nothing waits on a close)
            raise RemoteConnectionLost(self.close_reason) from None
        return event_id

    async def append(self, pcm: PCM) -> None:
        """Add 16 kHz audio to the remote's input buffer (resampled to 24 kHz)."""
        if not len(pcm):
            return
        out = np.asarray(self._resampler.resample_chunk(pcm), dtype="<i2")
        if len(out):
            audio = base64.b64encode(out.tobytes()).decode("ascii")
            await self._send({"type": "input_audio_buffer.append", "audio": audio})
            self.uncommitted += len(out)

    async def commit(self) -> bool:
        """Make the audio appended since the last commit a user item; False if there is none."""
        if not self.uncommitted:
            return False
        self.uncommitted = 0
        await self._send({"type": "input_audio_buffer.commit"})
        return True

    async def clear(self) -> None:
        """Drop the audio appended since the last commit."""
        self.uncommitted = 0
        await self._send({"type": "input_audio_buffer.clear"})

    async def create_response(self) -> RemoteResponse:
        """Ask for a reply to the conversation so far; read its events from the handle, and
        `release` it when done with it."""
        resp = RemoteResponse(f"va_{next(self._ids)}")
        self._pending.append(resp)
        self._current = resp
        try:
            await self._send({"type": "response.create", "event_id": resp.event_id})
        except BaseException:
            self.release(resp)
            raise
        return resp

    def release(self, resp: RemoteResponse) -> None:
        """Its events, from now on, go nowhere."""
        resp.released = True
        if resp.id is not None:
            self._responses.pop(resp.id, None)

    async def cancel_response(self, response_id: str | None = None) -> None:
        """Stop the response in progress (that one, if `response_id` is given)."""
        cancel = {"type": "response.cancel"}
        if response_id:
            cancel["response_id"] = response_id
        await self._send(cancel)

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """Cut an assistant item's audio (and transcript) at `audio_end_ms`."""
        at = {"content_index": 0, "audio_end_ms": audio_end_ms}
        await self._send({"type": "conversation.item.truncate", "item_id": item_id, **at})

    async def delete(self, item_id: str) -> None:
        """Remove an item from the conversation."""
        await self._send({"type": "conversation.item.delete", "item_id": item_id})

    async def close(self) -> None:
        """Close the socket and end the reader (safe to call twice)."""
        self.closing = True
        await self._ws.close()
        await self.cancel_tasks()
        self._lost("closed")

    # --- server events -------------------------------------------------------------------

    async def _read(self) -> None:
        reason = "the remote closed the connection"
        try:
            async for message in self._ws:
                try:
                    event = json.loads(message)
                except ValueError:
                    log.warning("realtime remote sent something that is not JSON")
                    continue
                if isinstance(event, dict):
                    self._route(event)
        except ConnectionClosed as exc:
            reason = f"the connection broke: {exc}"
        finally:
            self._lost("closed" if self.closing else reason)

    def _lost(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = f"realtime remote {self.url}: {reason}"
        self.closed.set()
        for resp in [*self._pending, *self._responses.values()]:
            resp.fail(RemoteConnectionLost(self.close_reason))
        self._pending.clear()
        self._responses.clear()

    def _route(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        response: dict[str, Any] = event.get("response") or {}
        if kind == "response.created":
            self._bind(response, event)
        elif kind == "error":
            self._error(event)
        elif rid := event.get("response_id") or response.get("id"):
            resp = self._responses.get(rid)
            if resp is not None:
                resp.deliver(event)
                if kind == "response.done":
                    self._responses.pop(rid, None)

    def _bind(self, response: dict[str, Any], event: dict[str, Any]) -> None:
        if not self._pending:  # (the remote answers response.create events in order)
            log.debug("realtime remote started a response nobody asked for")
            return
        resp = self._pending.popleft()
        resp.id = response.get("id") or resp.event_id
        if not resp.released:
            self._responses[resp.id] = resp
            resp.deliver(event)

    def _live(self, resp: RemoteResponse) -> bool:
        return resp in self._pending or (resp.id is not None and resp.id in self._responses)

    def _error(self, event: dict[str, Any]) -> None:
        message = _message(event)
        cause = (event.get("error") or {}).get("event_id")
        resp = next((r for r in self._pending if r.event_id == cause), None)
        if resp is not None:
            self._pending.remove(resp)  # refused: no response.created will come
        elif cause is None and self._current is not None and self._live(self._current):
            resp = self._current
        if resp is None or resp.released:
            log.warning("realtime remote error (caused by %s): %s", cause or "?", message)
            return
        resp.fail(RemoteRealtimeError(f"realtime remote error: {message}"))


def _session_update(instructions: str, voice: str | None) -> dict[str, Any]:
    pcm = {"type": "audio/pcm", "rate": REMOTE_RATE}
    output: dict[str, Any] = {"format": pcm} | ({"voice": voice} if voice is not None else {})
    audio_in = {"format": pcm, "turn_detection": None, "transcription": {"model": "whisper-1"}}
    session = {
        "type": "realtime",
        "instructions": instructions,
        "output_modalities": ["audio"],
        "audio": {"input": audio_in, "output": output},
    }
    return {"type": "session.update", "session": session}


def _message(event: dict[str, Any]) -> str:
    error = event.get("error")
    return str(error.get("message") or error) if isinstance(error, dict) else "unknown error"
