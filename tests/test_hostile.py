"""Hostile input and slow clients: the server stays up, ends only the offending session, and
leaves nothing behind.

What other files already try (garbage on every endpoint, traversal on `/static`, oversize
messages, odd PCM byte counts, unusable offers, bad realtime events, the bounded realtime input
buffer, YAML bombs, fuzzed parsers) is listed with this file's cases in docs/security.md. Here:
clients that stop reading, WebRTC offers that cannot or will not connect, absurd `/pcm` sample
rates, a realtime client that streams audio without end, and what the logs may hold.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.servers import MakeServer, fake_engines, make_settings, ws_url
from tests.speech import silence_16k, speech_16k
from tests.test_server import QUESTION, converse_pcm, events_until, peer_connections
from voice_agent.audio.pcm import resample
from voice_agent.modelfiles import ModelStore
from voice_agent.protocol import MAX_SDP_CHARS, redact
from voice_agent.server import Server

TOKEN = "hunter2-9f8e7d6c5b4a"
REPLY = "Paris is the capital."
LONG_REPLY = ", ".join(["one two three four five six seven eight nine ten"] * 8) + "."
"""80 words in one sentence (a persona speaks two at most): 8 s of FakeTTS audio, more than a
socket's buffers hold."""


# --- a client that never reads ---------------------------------------------------------------


def ws_frame(payload: bytes, opcode: int) -> bytes:
    """One masked client frame (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    data = np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), n)
    return head + mask + data.tobytes()


class DeafClient:
    """A WebSocket client on a bare socket that reads nothing after the handshake.

    websockets' own client reads on into its queue whether or not it is iterated; this one
    leaves the server's messages in the kernel. A small MSS and receive buffer keep those
    buffers small, so a second or two of reply audio fills them and the server's sends wait."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, server: Server, path: str) -> DeafClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        response = b""
        while not response.endswith(b"\r\n\r\n"):  # byte by byte: nothing past the handshake
            byte = await asyncio.wait_for(loop.sock_recv(sock, 1), 5)
            assert byte, f"closed during the handshake: {response!r}"
            response += byte
        assert response.startswith(b"HTTP/1.1 101"), response
        return cls(sock)

    async def send_text(self, text: str) -> None:
        await self.loop.sock_sendall(self.sock, ws_frame(text.encode(), 0x1))

    async def send_binary(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, ws_frame(data, 0x2))

    async def cut_off(self, within_s: float) -> bool:
        """Read what was left unread: True if the server has closed the connection (EOF or a
        reset) within `within_s`."""

        async def drain() -> None:
            while await self.loop.sock_recv(self.sock, 1 << 16):
                pass

        try:
            await asyncio.wait_for(drain(), within_s)
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


async def until(predicate: Callable[[], bool], within_s: float, step_s: float = 0.05) -> bool:
    """Wait until `predicate()` is true; whether it became true within `within_s`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step_s)
    return bool(predicate())


async def pcm_session(server: Server, rate: int = 16000) -> ClientConnection:
    ws = await connect(ws_url(server, "/pcm"))
    await ws.send(json.dumps({"type": "start", "sample_rate": rate}))
    await events_until(ws, "session")
    return ws


def question(rate: int) -> np.ndarray:
    """The question and 1.5 s of silence after it (the end of the turn), at `rate`."""
    pcm = np.concatenate([speech_16k(QUESTION), silence_16k(1.5)])
    return resample(pcm, 16000, rate).astype("<i2")


async def test_clients_that_stop_reading_are_cut_off_and_others_go_on(
    make_server: MakeServer, store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A `/pcm` and a `/v1/realtime` client ask a question and then never read: the reply's
    sends wait on them, for `send_timeout_s` at most; then their sockets are closed and their
    sessions end. A bystander talking meanwhile is served as usual."""
    server = await make_server(fake_engines(store, make_settings(), reply=LONG_REPLY))
    server.send_timeout_s = 1.0
    caplog.set_level(logging.WARNING, logger="voice_agent")
    pcm = await DeafClient.connect(server, "/pcm")
    realtime = await DeafClient.connect(server, "/v1/realtime")
    try:
        await pcm.send_text(json.dumps({"type": "start", "sample_rate": 48000}))
        assert await until(lambda: len(server.sessions) == 2, 5)
        deaf = set(server.sessions)
        audio48, audio24 = question(48000), question(24000).tobytes()
        for i in range(0, len(audio48), 960):  # 20 ms messages
            await pcm.send_binary(audio48[i : i + 960].tobytes())
        for i in range(0, len(audio24), 9600):  # 200 ms appends
            chunk = base64.b64encode(audio24[i : i + 9600]).decode()
            await realtime.send_text(
                json.dumps({"type": "input_audio_buffer.append", "audio": chunk})
            )
        asked = time.monotonic()
        gone_at: list[float] = []

        def deaf_gone() -> bool:
            if deaf & set(server.sessions):
                return False
            gone_at.append(time.monotonic())
            return True

        gone = asyncio.ensure_future(until(deaf_gone, 20))

        bystander = await pcm_session(server)
        try:
            audio, _ = await converse_pcm(bystander, 16000)
        finally:
            await bystander.close()
        assert len(audio) == 400  # all 8 s of its reply, while the others were stuck

        # the end of the turn + the reply until the buffers are full (~2 s) + the timeout (1 s)
        # + the close (2 s at most): ~6 s on the 2-core machine
        assert await gone, server.sessions
        assert gone_at[0] - asked < 12
        assert await pcm.cut_off(5) and await realtime.cut_off(5)
    finally:
        pcm.close()
        realtime.close()
    assert await until(lambda: not server.sessions, 5)
    said = [r.getMessage() for r in caplog.records]
    for path in ("/pcm", "/v1/realtime"):  # cut by the send timeout (not the realtime queue)
        assert any(f"a {path} client took nothing" in m for m in said), said


async def test_stop_is_bounded_with_a_client_that_does_not_read(
    make_server: MakeServer, store: ModelStore
) -> None:
    """Shutting down while a reply waits on a client that does not read (its send timeout not
    yet reached): the socket is cut within the close timeout, and `stop` returns."""
    server = await make_server(fake_engines(store, make_settings(), reply=LONG_REPLY))
    server.send_timeout_s = 60.0
    deaf = await DeafClient.connect(server, "/pcm")
    try:
        await deaf.send_text(json.dumps({"type": "start", "sample_rate": 48000}))
        audio = question(48000)
        for i in range(0, len(audio), 960):
            await deaf.send_binary(audio[i : i + 960].tobytes())
        await asyncio.sleep(4)  # the turn ends, the reply fills the socket's buffers and waits
        assert server.sessions
        started = time.monotonic()
        await asyncio.wait_for(server.stop(grace_s=0), 10)
        assert time.monotonic() - started < 5 and not server.sessions
        assert await deaf.cut_off(5)
    finally:
        deaf.close()


# --- WebRTC signaling ------------------------------------------------------------------------


async def client_offer() -> str:
    """A real audio-only offer (aiortc's), from a peer closed at once: nobody answers checks."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return str(sdp)


def with_candidates(sdp: str, candidates: list[str]) -> str:
    """`sdp` with its ICE candidates replaced by `candidates` (`a=candidate:` lines' values)."""
    lines = [line for line in sdp.split("\r\n") if not line.startswith("a=candidate:")]
    at = next(i for i, line in enumerate(lines) if line.startswith("a=ice-ufrag"))
    extra = [f"a=candidate:{c}" for c in candidates]
    return "\r\n".join([*lines[:at], *extra, *lines[at:]])


BOGUS_CANDIDATES: dict[str, list[str]] = {
    "public": ["1 1 udp 2130706431 8.8.8.8 3478 typ host"],
    "bad ipv4": ["1 1 udp 2130706431 999.1.1.1 3478 typ host"],
    "hostname": ["1 1 udp 2130706431 voice-agent.invalid 3478 typ host"],
    "mdns": ["1 1 udp 2130706431 4f1c5a6e-21d4-4bd5-9b0e-6f1d4a2b7c11.local 3478 typ host"],
    "bad ipv6": ["1 1 udp 2130706431 fe80::zz:1 3478 typ host"],
    "bad port": ["1 1 udp 2130706431 127.0.0.1 99999 typ host"],
    "short": ["1 1 udp"],
    "none": [],
}
JUNK_LINES = ["zzz", "a=", "a=rtpmap:banana", "m=", "a=fingerprint:sha-999 00", "x=\x7f\x00"]


def with_junk(sdp: str, junk: str) -> str:
    lines = sdp.split("\r\n")
    lines.insert(len(lines) // 2, junk)
    return "\r\n".join(lines)


async def test_offers_that_never_connect_end_their_sessions(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Offers whose candidates lead nowhere, and real offers with junk lines in them (their
    peer has gone): each is refused (`bad_offer`) or answered and then ended with `ice_failed`
    within `connect_timeout_s` (plus the close). Nothing is left open, nothing fails in the
    background, and a bystander is served meanwhile."""
    server = await make_server()
    server.connect_timeout_s = 2.0
    offer = await client_offer()
    offers = {name: with_candidates(offer, c) for name, c in BOGUS_CANDIDATES.items()}
    offers |= {f"junk {junk!r}": with_junk(offer, junk) for junk in JUNK_LINES}

    async def try_offer(sdp: str) -> list[dict[str, Any]]:
        async with connect(ws_url(server, "/ws")) as ws:
            await ws.send(json.dumps({"type": "offer", "sdp": sdp}))
            events = await events_until(ws, "error", within_s=15)
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            return events

    bystander = await pcm_session(server)
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(try_offer(sdp) for sdp in offers.values()))
        took = time.monotonic() - started
        await talk_and_hear(bystander)
    finally:
        await bystander.close()
    assert took < 12  # 2 s to connect, 5 s for aioice's checks to settle, the close
    for name, events in zip(offers, results, strict=True):
        error = events[-1]
        assert error["fatal"] and error["code"] in ("ice_failed", "bad_offer"), (name, events)
        if error["code"] == "ice_failed":
            types = [e["type"] for e in events]  # (between: the greeting, which never plays)
            assert types[:2] == ["answer", "session"] and types.count("error") == 1, (name, types)
            assert not [e for e in events if e.get("role") == "user"], (name, events)
    codes = {name: events[-1]["code"] for name, events in zip(offers, results, strict=True)}
    assert all(codes[name] == "ice_failed" for name in BOGUS_CANDIDATES), codes
    assert await until(lambda: not server.sessions, 10)
    assert await until(lambda: peer_connections() == 0, 10)
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert failures == []


async def talk_and_hear(ws: ClientConnection) -> None:
    """One turn on an open `/pcm` session, until the reply's final transcript."""
    _, events = await converse_pcm(ws, 16000)
    assert events[-1]["role"] == "assistant" and events[-1]["text"] == REPLY


@pytest.mark.parametrize(
    ("sdp", "code"),
    [
        ("v=0\r\n" + "a=x:" + "x" * MAX_SDP_CHARS + "\r\n", "bad_message"),  # over the bound
        ("v=0\r\n" + "a=x-junk:1\r\n" * 5000, "bad_offer"),  # many junk lines
        ("v=0\r\n\x00\x01\x02\xff\r\nm=audio \x00 UDP\r\n", "bad_offer"),  # binary junk
    ],
)
async def test_huge_and_garbage_sdp_is_refused(
    make_server: MakeServer, sdp: str, code: str
) -> None:
    server = await make_server()
    async with connect(ws_url(server, "/ws")) as ws:
        await ws.send(json.dumps({"type": "offer", "sdp": sdp}))
        error = (await events_until(ws, "error"))[-1]
        assert error["code"] == code and error["fatal"], error
    assert await until(lambda: not server.sessions, 5)
    assert await until(lambda: peer_connections() == 0, 5)


# --- /pcm --------------------------------------------------------------------------------------


async def test_absurd_start_messages_get_bad_message(make_server: MakeServer) -> None:
    server = await make_server()
    starts = [
        '{"type": "start", "sample_rate": 16000.0}',
        '{"type": "start", "sample_rate": 0}',
        '{"type": "start", "sample_rate": 1000000000}',
        '{"type": "start", "sample_rate": -16000}',
        '{"type": "start", "sample_rate": "16000"}',
        '{"type": "start", "sample_rate": true}',
        '{"type": "start", "sample_rate": null}',
        '{"type": "start", "sample_rate": [16000]}',
        '{"type": "start", "sample_rate": NaN}',
        '{"type": "start", "sample_rate": 1e400}',
        '{"type": "start", "sample_rate": ' + "9" * 5000 + "}",
        '{"type": "start", "sample_rate": 16000, "channels": 2}',
        '{"type": "start", "sample_rate": 16000, "persona": "' + "a" * 10_000 + '"}',
    ]
    bystander = await pcm_session(server)
    try:
        for start in starts:
            async with connect(ws_url(server, "/pcm")) as ws:
                await ws.send(start)
                error = (await events_until(ws, "error"))[-1]
                assert error["code"] == "bad_message" and error["fatal"], (start[:80], error)
                assert len(error["message"]) < 300  # the client's junk is not echoed back
        await talk_and_hear(bystander)
    finally:
        await bystander.close()


# --- /v1/realtime: audio without end -----------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_realtime_client_streaming_noise_for_an_hour_keeps_memory_bounded(
    make_server: MakeServer,
) -> None:
    """`server_vad` mode, speech-free noise sent as fast as the server takes it for 12 s of
    wall time (many minutes of audio): the server's memory stays flat and a bystander is
    answered. (In `turn_detection: null` mode the input buffer is bounded:
    tests/test_realtime_api.py::test_the_input_buffer_is_bounded.)"""
    server = await make_server()
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(24000 * 4) * 300).astype("<i2").tobytes()  # 4 s, ~-40 dBFS
    chunks = [
        json.dumps(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(noise[i : i + 96000]).decode(),
            }
        )
        for i in range(0, len(noise), 96000)  # 2 s appends
    ]
    sent_s = 0.0

    async with connect(ws_url(server, "/v1/realtime"), max_size=None) as ws:

        async def read() -> None:  # this client reads what it is sent (a deaf one is cut off)
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass

        async def flood(seconds: float) -> None:
            nonlocal sent_s
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for chunk in chunks:
                    await ws.send(chunk)
                    sent_s += 2.0

        reader = asyncio.ensure_future(read())
        try:
            speech_16k(QUESTION)  # the bystander's question: Piper's model loads once, here
            await flood(3)  # warm up: allocator pools, the VAD's state
            before, sent_before = rss_bytes(), sent_s
            bystander = await pcm_session(server)
            try:
                flooding = asyncio.ensure_future(flood(12))
                await talk_and_hear(bystander)
                await flooding
            finally:
                await bystander.close()
            grown = rss_bytes() - before
        finally:
            reader.cancel()
    audio_s = sent_s - sent_before
    assert audio_s > 10 * 60, f"only {audio_s:.0f} s of audio went in"
    held = 2 * 16000 * audio_s  # what keeping that audio at the pipeline's rate would take
    assert grown < min(32 << 20, held / 4), f"RSS grew {grown >> 20} MB for {audio_s:.0f} s"
    assert await until(lambda: not server.sessions, 5)


# --- logs ----------------------------------------------------------------------------------------


async def test_logs_hold_no_token_and_no_words(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Conversations over `/pcm` and `/v1/realtime` with a token set, everything logged at
    INFO: neither the token nor what either side said appears in any record."""
    for name in ("", "voice_agent", "websockets", "aiortc", "aioice"):
        caplog.set_level(logging.INFO, logger=name or None)
    server = await make_server(token=TOKEN)
    async with connect(ws_url(server, f"/pcm?token={TOKEN}")) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        await events_until(ws, "session")
        _, events = await converse_pcm(ws, 16000)
    headers = {"Authorization": f"Bearer {TOKEN}x"}  # a wrong one, refused
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(server, "/pcm"), additional_headers=headers)
    assert refused.value.response.status_code == 401
    user = next(
        e["text"]
        for e in events
        if e["type"] == "transcript" and e["role"] == "user" and e["final"]
    )
    assert user == "what is the capital of france" and events[-1]["text"] == REPLY
    bearer = {"Authorization": f"Bearer {TOKEN}"}  # and the same over the realtime API
    async with connect(ws_url(server, "/v1/realtime"), additional_headers=bearer) as ws:
        audio = question(24000).tobytes()
        for i in range(0, len(audio), 9600):
            chunk = base64.b64encode(audio[i : i + 9600]).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        kinds: list[str] = []
        while not kinds or kinds[-1] != "response.done":
            kinds.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["type"])
    assert "conversation.item.input_audio_transcription.completed" in kinds
    await server.stop(0)
    logged = caplog.text + "\n".join(f"{r.name} {r.getMessage()} {r.args}" for r in caplog.records)
    assert caplog.records, "nothing was logged: the test would prove nothing"
    for secret in (TOKEN, user, REPLY, "capital"):
        assert secret.lower() not in logged.lower(), secret


def test_configured_urls_lose_their_secrets_in_logs_and_errors() -> None:
    said = redact(
        "cannot connect to realtime remote wss://me:pw0rd@api.example/v1/realtime"
        "?model=m&api_key=sk-123&token=t0k: HTTP 401"
    )
    assert said == (
        "cannot connect to realtime remote wss://me:***@api.example/v1/realtime"
        "?model=m&api_key=***&token=*** HTTP 401"  # a value runs to the next blank
    )
    assert redact("no secrets here: a=1&b=2") == "no secrets here: a=1&b=2"
