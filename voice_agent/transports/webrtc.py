"""WebRTC (aiortc): a browser's microphone in, the assistant's voice out.

`WebRTCTransport.accept(offer)` answers one offer (ICE gathered, no trickle): the browser's Opus
track comes in, is decoded by aiortc and resampled to the pipeline's rate; `ReplyTrack` goes
out. Events travel over the signaling WebSocket, not over the peer connection.

`ReplyTrack` is both the outbound track and the session's `AudioSink`. aiortc's sender pulls a
frame with `recv()` and encodes it; `recv()` paces itself by its pts in samples (as aiortc's own
tracks do) and hands out what playback wrote, or silence. It holds at most `SINK_FRAMES` frames,
so playback (which writes as fast as the track accepts) is at most 40 ms ahead of what was sent:
that is what `played_ms` subtracts, and what an interruption drops.

ICE: a server bound to loopback gathers only a 127.0.0.1 host candidate (`ice_on_loopback`),
so a local server opens no media port on other interfaces. aioice leaves loopback out of its
host addresses; this module swaps in its own list. Consent checks: see `consent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable

import aioice.ice
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voice_agent.frames import PCM, Frame, InputAudioFrame
from voice_agent.protocol import ProtocolError
from voice_agent.transports import consent
from voice_agent.transports.base import PeerTransport, SendJson

log = logging.getLogger(__name__)

OUTPUT_RATE = 48000
"""What Opus encodes: sending it at this rate spares aiortc a second resampling."""
SINK_FRAMES = 2
CONNECT_TIMEOUT_S = 30.0
"""How long a peer may take from the answer to its first audio."""
ICE_SETTLE_TIMEOUT_S = 5.0
MAX_LAG_S = 0.2
"""A track that falls this far behind its clock (the loop stalled) restarts the clock instead
of bursting frames to catch up."""

_gather_all = aioice.ice.get_host_addresses
_accepted: weakref.WeakSet[RTCPeerConnection] = weakref.WeakSet()
"""Every peer connection `WebRTCTransport.accept` made that is still referenced somewhere."""


def live_peer_connections() -> int:
    """How many peer connections this process accepted and has not closed yet (the
    `voice_agent_peer_connections` gauge). Once every session is over it should be 0: more means
    a peer connection outlived its session (its ICE, DTLS and media tasks run on with it)."""
    return sum(pc.connectionState != "closed" for pc in list(_accepted))


def peer_connection() -> RTCPeerConnection:
    """A peer connection with no STUN or TURN servers, whose ICE consent checks hold on a busy
    machine (`voice_agent.transports.consent`)."""
    consent.install()
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


def ice_on_loopback(on: bool) -> None:
    """Gather ICE host candidates on 127.0.0.1 only (True) or on every interface but loopback
    (False, aioice's own choice). Process-wide: it applies to every peer connection made after."""
    aioice.ice.get_host_addresses = _loopback_only if on else _gather_all


def hold_frames(pc: RTCPeerConnection, frames: int) -> None:
    """Make the audio receivers of `pc` hold `frames` 20 ms frames before decoding.

    aiortc gives every audio receiver a jitter buffer that waits for 4 frames (80 ms of latency
    on everything the peer says) and has no setting for it; this replaces that buffer. Call it
    once the transceivers exist, before media flows. A future aiortc without that private
    attribute is left as it is (and says so in the log)."""
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if transceiver.kind != "audio":
            continue
        if not hasattr(receiver, "_RTCRtpReceiver__jitter_buffer"):
            log.warning("this aiortc has no receiver jitter buffer to set; left as it is")
            continue
        receiver._RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=16, prefetch=frames)


async def received_pcm(track: MediaStreamTrack, rate: int) -> AsyncIterator[PCM]:
    """What an incoming audio track carries, as mono 16-bit PCM at `rate`, until it ends."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        assert isinstance(frame, av.AudioFrame)
        for out in resampler.resample(frame):
            yield out.to_ndarray().reshape(-1).astype(np.int16, copy=True)


class ReplyTrack(MediaStreamTrack):
    """The assistant's voice as an outbound audio track; also the session's audio sink."""

    kind = "audio"
    realtime = False
    """Playback writes as fast as the track takes frames: the track is the clock."""

    def __init__(
        self,
        sample_rate: int = OUTPUT_RATE,
        frame_ms: int = 20,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self._frame_samples = sample_rate * frame_ms // 1000
        self._clock = clock
        self._queue: deque[PCM] = deque()
        self._space = asyncio.Event()
        self._space.set()
        self._start: float | None = None
        self._pts = 0
        self._last = 0
        self.audio_frames_sent = 0
        """Frames of the reply handed to aiortc (silence between replies not counted)."""
        self.on_sent: Callable[[PCM], None] | None = None
        """Called with each frame of the reply as it goes out (a session's recording)."""

    # --- AudioSink ---------------------------------------------------------------------------

    async def write(self, pcm: PCM) -> None:
        while len(self._queue) >= SINK_FRAMES and self.readyState == "live":
            self._space.clear()
            await self._space.wait()
        if self.readyState == "live":  # once the peer has gone, what is written goes nowhere
            self._queue.append(pcm)

    def buffered_ms(self) -> float:
        return 1000.0 * sum(len(p) for p in self._queue) / self.sample_rate

    def clear(self) -> None:
        self._queue.clear()
        self._space.set()

    # --- MediaStreamTrack --------------------------------------------------------------------

    def stop(self) -> None:
        super().stop()
        self._space.set()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock()
        if self._start is None:
            self._start = now
        else:
            self._pts += self._last
            delay = self._start + self._pts / self.sample_rate - now
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -MAX_LAG_S:
                self._start = now - self._pts / self.sample_rate
        if self._queue:
            pcm = self._queue.popleft()
            self.audio_frames_sent += 1
            if self.on_sent is not None:
                self.on_sent(pcm)
        else:
            pcm = np.zeros(self._frame_samples, np.int16)
        self._space.set()
        self._last = len(pcm)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.sample_rate)
        return frame


class WebRTCTransport(PeerTransport):
    """One browser (or other WebRTC peer): audio over the peer connection, events as JSON."""

    sink: ReplyTrack

    def __init__(
        self, pc: RTCPeerConnection, track: ReplyTrack, sample_rate: int, send_json: SendJson
    ) -> None:
        super().__init__(send_json)
        self.pc = pc
        self.sink = track
        self.sample_rate = sample_rate
        self._inbound: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self.gone = asyncio.Event()
        """Set when the peer connection has failed or closed: the session should end."""
        self._ice_settled = asyncio.Event()
        self._closed = False

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and not self._inbound.done():
                self._inbound.set_result(track)

        @pc.on("iceconnectionstatechange")
        def on_ice_state() -> None:
            if pc.iceConnectionState not in ("new", "checking"):
                self._ice_settled.set()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            log.debug("peer connection: %s", pc.connectionState)
            if pc.connectionState == "failed":  # the session ends: say why, for operators
                log.info("peer connection failed (ICE or DTLS): the session ends")
            if pc.connectionState in ("failed", "closed"):
                self.gone.set()

    @classmethod
    async def accept(
        cls,
        offer_sdp: str,
        *,
        sample_rate: int,
        frame_ms: int,
        send_json: SendJson,
        jitter_frames: int = 1,
    ) -> tuple[WebRTCTransport, str]:
        """Answer an offer: the transport and the answer's SDP. A bad offer raises
        `ProtocolError("bad_offer")` and leaves nothing open."""
        pc = peer_connection()
        _accepted.add(pc)
        transport = cls(pc, ReplyTrack(OUTPUT_RATE, frame_ms), sample_rate, send_json)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            kinds = [t.kind for t in pc.getTransceivers()]
            if kinds != ["audio"]:
                raise ValueError(f"expected one audio track, got {kinds or 'none'}")
            pc.addTrack(transport.sink)
            hold_frames(pc, jitter_frames)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await transport.close()
            message = str(exc) or type(exc).__name__
            raise ProtocolError("bad_offer", f"cannot use this offer: {message}") from None
        return transport, pc.localDescription.sdp

    async def frames(self) -> AsyncIterator[Frame]:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                track = await self._inbound
        except TimeoutError:
            raise ConnectionError(
                f"no audio from the peer within {CONNECT_TIMEOUT_S:.0f} s of the answer"
            ) from None
        async for pcm in received_pcm(track, self.sample_rate):
            yield InputAudioFrame(pcm=pcm, sample_rate=self.sample_rate)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.sink.stop()
        if self.pc.iceConnectionState == "checking":
            # aioice 0.13 starts its consent checks when a connection attempt succeeds, even
            # one closed meanwhile, and they then run on for half a minute: let it settle first.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ICE_SETTLE_TIMEOUT_S):
                    await self._ice_settled.wait()
        await self.pc.close()
        self.gone.set()
