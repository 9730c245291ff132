"""The outbound WebRTC track: paced by its own sample clock, bounded, and quick to fall silent."""

from __future__ import annotations

import asyncio
import gc

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from voice_agent.transports.webrtc import SINK_FRAMES, ReplyTrack, WebRTCTransport

RATE = 48000
FRAME = RATE // 50


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frame_of(value: int) -> np.ndarray:
    return np.full(FRAME, value, np.int16)


def samples(frame: av.AudioFrame) -> np.ndarray:
    return frame.to_ndarray().reshape(-1)


async def test_recv_hands_out_what_was_written_then_silence_with_pts_in_samples() -> None:
    track = ReplyTrack(RATE, 20, clock=Clock())
    await track.write(frame_of(1000))
    await track.write(frame_of(2000))
    assert track.buffered_ms() == 40
    got = [await track.recv() for _ in range(3)]
    assert [int(samples(f)[0]) for f in got] == [1000, 2000, 0]
    assert [f.pts for f in got] == [0, FRAME, 2 * FRAME]
    assert all(f.sample_rate == RATE and f.layout.name == "mono" for f in got)
    assert track.buffered_ms() == 0 and track.audio_frames_sent == 2


async def test_recv_waits_for_its_clock_and_does_not_burst_after_a_stall() -> None:
    clock = Clock()
    track = ReplyTrack(RATE, 20, clock=clock)
    await track.recv()  # starts the clock at 100.0
    clock.now += 0.015  # 5 ms before the next frame is due
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await track.recv()
    assert loop.time() - t0 >= 0.004
    clock.now += 1.0  # the loop was blocked for a second
    await track.recv()
    t0 = loop.time()
    await track.recv()  # the clock restarted: this one waits its 20 ms, no catching up
    assert loop.time() - t0 >= 0.015


async def test_write_waits_while_the_track_holds_its_bound() -> None:
    track = ReplyTrack(RATE, 20, clock=Clock())
    for _ in range(SINK_FRAMES):
        await track.write(frame_of(1))
    blocked = asyncio.ensure_future(track.write(frame_of(2)))
    await asyncio.sleep(0.01)
    assert not blocked.done() and track.buffered_ms() == 20 * SINK_FRAMES
    await track.recv()
    await asyncio.wait_for(blocked, 1)
    assert track.buffered_ms() == 20 * SINK_FRAMES


async def test_clear_drops_what_was_not_sent_and_frees_a_waiting_writer() -> None:
    track = ReplyTrack(RATE, 20, clock=Clock())
    for _ in range(SINK_FRAMES):
        await track.write(frame_of(500))
    blocked = asyncio.ensure_future(track.write(frame_of(600)))
    await asyncio.sleep(0)
    track.clear()
    await asyncio.wait_for(blocked, 1)
    frames = [int(samples(await track.recv())[0]) for _ in range(2)]
    assert frames == [600, 0]  # only what came after the interruption


async def test_a_stopped_track_takes_writes_without_blocking_and_ends_recv() -> None:
    track = ReplyTrack(RATE, 20, clock=Clock())
    for _ in range(SINK_FRAMES):
        await track.write(frame_of(1))
    blocked = asyncio.ensure_future(track.write(frame_of(2)))
    await asyncio.sleep(0)
    track.stop()
    await asyncio.wait_for(blocked, 1)
    await asyncio.wait_for(track.write(frame_of(3)), 1)
    with pytest.raises(MediaStreamError):
        await track.recv()


@pytest.mark.parametrize(
    "sdp",
    [
        "garbage",
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",  # no media at all
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        "c=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:96 VP8/90000\r\n",
    ],
)
async def test_an_unusable_offer_is_refused_and_leaves_no_peer_open(sdp: str) -> None:
    from voice_agent.protocol import ProtocolError

    async def send(message: dict[str, object]) -> None:
        raise AssertionError("nothing is sent for a refused offer")

    with pytest.raises(ProtocolError) as err:
        await WebRTCTransport.accept(sdp, sample_rate=16000, frame_ms=20, send_json=send)
    assert err.value.code == "bad_offer" and "cannot use this offer" in err.value.message
    gc.collect()
    open_peers = [
        o
        for o in gc.get_objects()
        if isinstance(o, RTCPeerConnection) and o.connectionState != "closed"
    ]
    assert open_peers == []


async def test_the_answering_peer_holds_the_configured_jitter_frames() -> None:
    client = RTCPeerConnection()
    client.addTransceiver("audio")
    await client.setLocalDescription(await client.createOffer())

    async def send(message: dict[str, object]) -> None:
        pass

    transport, answer = await WebRTCTransport.accept(
        client.localDescription.sdp, sample_rate=16000, frame_ms=20, send_json=send, jitter_frames=1
    )
    try:
        assert "m=audio" in answer and "a=candidate" in answer
        [receiver] = [t.receiver for t in transport.pc.getTransceivers()]
        # aiortc's own buffer waits for 4 frames (80 ms) before it decodes anything
        assert receiver._RTCRtpReceiver__jitter_buffer._prefetch == 1  # type: ignore[attr-defined]
    finally:
        await transport.close()
        await client.close()
