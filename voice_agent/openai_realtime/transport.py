"""`/v1/realtime`: a session over one WebSocket speaking the OpenAI Realtime API.

The socket carries JSON events both ways. `input_audio_buffer.append` brings base64 pcm16 at
24 kHz, resampled on the way in to the pipeline's rate by one streaming resampler; the reply's
audio goes back as `response.output_audio.delta` events of 20 ms, paced in real time by
playback (so a barge-in stops it within a frame, and the server knows what was heard). What
the events mean is `voice_agent.openai_realtime.conversation`'s business; this module moves bytes.

A client event that is malformed, unknown or cannot be acted on gets an `error` event and the
session goes on, as the API does. Everything sent goes through one bounded queue, in order; a
client that stops reading is disconnected (close 1008), as soon as the queue is full or when it
has taken nothing for `send_timeout_s`, whichever comes first (it would hold the reply's audio,
and memory, without end).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import soxr
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from voice_agent.events import Event
from voice_agent.frames import PCM, Frame, InputAudioFrame
from voice_agent.openai_realtime.conversation import RealtimeConversation
from voice_agent.openai_realtime.schema import (
    BETA_NAMES,
    RATE,
    RealtimeError,
    audio_of,
    parse_client_event,
)
from voice_agent.tasks import TaskOwner
from voice_agent.transports.base import Transport
from voice_agent.transports.sockets import (
    CLOSE_POLICY,
    NOT_READING,
    SEND_TIMEOUT_S,
    close_within,
    send_within,
)

log = logging.getLogger(__name__)

MAX_QUEUED = 1024
"""Server events waiting for a client that reads slowly (~20 s of reply audio)."""
_event_ids = itertools.count(1)


class RealtimeSink:
    """The reply's audio, as `response.output_audio.delta` events."""

    realtime = True
    sample_rate = RATE

    def __init__(self, transport: RealtimeTransport) -> None:
        self._transport = transport

    async def write(self, pcm: PCM) -> None:
        conversation = self._transport.conversation
        if conversation is None:
            return
        response_id, item_id = conversation.on_reply_audio(len(pcm))
        delta = base64.b64encode(pcm.astype("<i2", copy=False).tobytes()).decode("ascii")
        self._transport.send(
            {
                "type": "response.output_audio.delta",
                "response_id": response_id,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": delta,
            }
        )

    def buffered_ms(self) -> float:
        return 0.0  # what the client buffers is not known here

    def clear(self) -> None:
        pass


class RealtimeTransport(Transport, TaskOwner):
    """One Realtime API client's session over `ws` (see the module docstring)."""

    def __init__(
        self,
        ws: ServerConnection,
        pipeline_rate: int,
        *,
        beta: bool,
        max_append_bytes: int,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        TaskOwner.__init__(self, "realtime")
        self._ws = ws
        self.beta = beta
        self.send_timeout_s = send_timeout_s
        self.pipeline_rate = pipeline_rate
        self.max_append_bytes = max_append_bytes
        self.sink = RealtimeSink(self)
        self.conversation: RealtimeConversation | None = None
        self._resampler = soxr.ResampleStream(RATE, pipeline_rate, 1, dtype="int16")
        self._out: asyncio.Queue[str] = asyncio.Queue(MAX_QUEUED)
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    def attach(self, conversation: RealtimeConversation) -> None:
        """Start with the conversation this transport's events belong to."""
        self.conversation = conversation
        self._writer = self.create_task(self._write(), "writer")
        conversation.hello()

    # --- out -----------------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        """Queue one server event (never blocks; a client that has stopped reading is cut)."""
        if self._closed:
            return
        kind = message["type"]
        if self.beta:
            kind = BETA_NAMES.get(kind, kind)
        body = {k: v for k, v in message.items() if k != "type"}
        data = json.dumps({"type": kind, "event_id": f"event_{next(_event_ids)}", **body})
        try:
            self._out.put_nowait(data)
        except asyncio.QueueFull:
            log.warning("realtime client is not reading: %d events queued; closing", MAX_QUEUED)
            self._closed = True
            self.create_task(close_within(self._ws, CLOSE_POLICY, NOT_READING), "close-slow")

    async def _write(self) -> None:
        try:
            while True:
                await send_within(self._ws, await self._out.get(), self.send_timeout_s)
        except ConnectionClosed:
            self._closed = True  # nothing more is queued for a socket that is gone

    async def send_event(self, event: Event) -> None:
        if self.conversation is not None:
            self.conversation.on_session_event(event)

    def error(self, exc: RealtimeError, client_event: Any = None) -> None:
        """Tell the client one of its events failed (the session goes on)."""
        event_id = exc.event_id
        if event_id is None and isinstance(client_event, dict):
            event_id = client_event.get("event_id")
        self.send(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": exc.code,
                    "message": exc.message,
                    "param": exc.param,
                    "event_id": event_id,
                },
            }
        )

    # --- in ------------------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[Frame]:
        assert self.conversation is not None, "attach() first"
        try:
            async for message in self._ws:
                event: dict[str, Any] | None = None
                try:
                    event = parse_client_event(message)
                    if event["type"] == "input_audio_buffer.append":
                        data = audio_of(event, self.max_append_bytes)
                        for frame in self.conversation.on_audio(len(data) // 2):
                            yield frame
                        pcm = self._pcm(data)
                        if len(pcm):
                            yield InputAudioFrame(pcm=pcm, sample_rate=self.pipeline_rate)
                    else:
                        for frame in self.conversation.on_client_event(event):
                            yield frame
                except RealtimeError as exc:
                    self.error(exc, event)
        except ConnectionClosed:
            return

    def _pcm(self, data: bytes) -> PCM:
        pcm = np.frombuffer(data, "<i2").astype(np.int16)
        return np.asarray(self._resampler.resample_chunk(pcm), np.int16)

    async def close(self) -> None:
        """Send what is queued (for up to a second), then close the socket. Idempotent."""
        if self._writer is not None and not self._closed:
            self._closed = True
            for _ in range(50):
                if self._out.empty():
                    break
                await asyncio.sleep(0.02)
        self._closed = True
        await self.cancel_tasks()
        await close_within(self._ws)
