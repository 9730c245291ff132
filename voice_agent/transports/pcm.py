"""`/pcm`: a session over one WebSocket carrying raw PCM, for programs.

After the `start` message (handled by the server), binary messages are 16-bit little-endian
mono PCM at the client's rate, resampled on the way in to the pipeline's rate (one streaming
resampler, so chunk edges add nothing). The reply goes back the same way, in 20 ms binary
messages paced in real time by playback; events go as JSON text messages. A client that takes
nothing sent to it for `send_timeout_s` is cut off (`voice_agent.transports.sockets`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import numpy as np
import soxr
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from voice_agent.frames import PCM, Frame, InputAudioFrame
from voice_agent.protocol import Bye, ProtocolError, parse_client_message
from voice_agent.transports.base import PeerTransport, SendJson
from voice_agent.transports.sockets import SEND_TIMEOUT_S, close_within, send_within


class PcmSink:
    """Sends each frame as it is written; the client plays what it gets as it gets it."""

    realtime = True

    def __init__(
        self, ws: ServerConnection, sample_rate: int, send_timeout_s: float = SEND_TIMEOUT_S
    ) -> None:
        self._ws = ws
        self.sample_rate = sample_rate
        self.send_timeout_s = send_timeout_s

    async def write(self, pcm: PCM) -> None:
        with contextlib.suppress(ConnectionClosed):  # gone: nothing plays, the session is ending
            await send_within(
                self._ws, pcm.astype("<i2", copy=False).tobytes(), self.send_timeout_s
            )

    def buffered_ms(self) -> float:
        return 0.0  # what the client buffers is not known here

    def clear(self) -> None:
        pass


class PcmTransport(PeerTransport):
    """One program's session: PCM in and out over `ws`, at the client's `sample_rate`; audio
    that the client does not take within `send_timeout_s` closes its socket."""

    def __init__(
        self,
        ws: ServerConnection,
        sample_rate: int,
        pipeline_rate: int,
        send_json: SendJson,
        *,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        super().__init__(send_json)
        self._ws = ws
        self.sink = PcmSink(ws, sample_rate, send_timeout_s)
        self.pipeline_rate = pipeline_rate
        self._resampler = (
            soxr.ResampleStream(sample_rate, pipeline_rate, 1, dtype="int16")
            if sample_rate != pipeline_rate
            else None
        )

    async def frames(self) -> AsyncIterator[Frame]:
        try:
            async for message in self._ws:
                if isinstance(message, str):
                    parsed = parse_client_message(message)
                    if isinstance(parsed, Bye):
                        return
                    raise ProtocolError(
                        "bad_message", f"'{parsed.type}' is not expected during a session"
                    )
                pcm = self._pcm(message)
                if len(pcm):
                    yield InputAudioFrame(pcm=pcm, sample_rate=self.pipeline_rate)
        except ConnectionClosed:
            return

    def _pcm(self, data: bytes) -> PCM:
        if len(data) % 2:
            raise ProtocolError(
                "bad_message",
                f"audio must be whole 16-bit samples; a message of {len(data)} bytes is not",
            )
        pcm = np.frombuffer(data, "<i2").astype(np.int16)
        if self._resampler is None:
            return pcm
        return np.asarray(self._resampler.resample_chunk(pcm), np.int16)

    async def close(self) -> None:
        await close_within(self._ws)
