"""Simulated callers: programs that talk to a voice-agent server the way its users do.

`WebRTCCaller` is a browser (an aiortc peer doing the offer/answer over `/ws`); `PcmCaller` is a
program on `/pcm`; `RealtimeCaller` an OpenAI Realtime client on `/v1/realtime` (its events are
kept translated to docs/protocol.md's, so that benchmarks read every caller the same way).
Each sends a scripted microphone (`bench/mic.py`) in real time (`say()` queues speech; silence
otherwise, as a real microphone sends) and record what comes back: every event, and the reply's
audio with its arrival time. Tests and benchmarks measure from the audio itself: when the caller
stopped talking, and when the reply became audible.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voice_agent.audio.pcm import dbfs, resample
from voice_agent.bench.mic import Clock, Mic, MicTrack, Said
from voice_agent.frames import PCM
from voice_agent.tasks import TaskOwner
from voice_agent.transports.base import is_loopback
from voice_agent.transports.webrtc import (
    hold_frames,
    ice_on_loopback,
    peer_connection,
    received_pcm,
)

HEARD_RATE = 16000
"""What the callers keep of the reply: 16 kHz mono."""


@dataclass(slots=True)
class Heard:
    """A piece of the reply's audio (16 kHz) and when it arrived (monotonic s)."""

    at: float
    pcm: PCM


class Caller(TaskOwner):
    """What both callers share: the script, the events and the reply's audio."""

    def __init__(self, ws: ClientConnection, mic: Mic) -> None:
        super().__init__("caller")
        self.ws = ws
        self.mic = mic
        self.events: list[dict[str, Any]] = []
        self.heard: list[Heard] = []
        self.lost: str | None = None
        """Why the server ended the session (its close code and reason), once it has."""
        self.behind_s: float | None = None
        """How far the reply audio fell behind the wall clock at worst (WebRTC, where the server
        sends without pause): audio this caller heard late or never, by its own backlog (a
        process that reads its sockets too slowly) or the server's."""
        self._news = asyncio.Condition()

    async def __aenter__(self) -> Caller:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def say(self, pcm: PCM, rate: int, label: str = "") -> Said:
        return self.mic.say(pcm, rate, label)

    async def _event(self, raw: str | bytes) -> None:
        async with self._news:
            self.events.append(json.loads(raw))
            self._news.notify_all()

    def _gone(self) -> None:
        """The server's side of the session has closed (the events' socket ended)."""
        self.lost = f"the server closed the session ({self.ws.close_code} {self.ws.close_reason})"

    def _heard(self, pcm: PCM) -> None:
        self.heard.append(Heard(time.monotonic(), pcm))

    async def wait_for(
        self,
        kind: str,
        where: Callable[[dict[str, Any]], bool] = lambda e: True,
        within_s: float = 30,
        after: int = 0,
    ) -> dict[str, Any]:
        """The first event of `kind` that `where` accepts, among those received from index
        `after` on (received so far or to come)."""

        async def find() -> dict[str, Any]:
            async with self._news:
                while True:
                    for e in self.events[after:]:
                        if e.get("type") == kind and where(e):
                            return e
                    await self._news.wait()

        async with asyncio.timeout(within_s):
            return await find()

    async def greeted(self, within_s: float = 2.0) -> dict[str, Any] | None:
        """Until the persona's greeting has been said (its final transcript), so that what
        the caller says next is not a barge-in over it; None if no greeting began within
        `within_s` of the session's start (a persona without one)."""
        await self.wait_for("session")
        try:
            await self.wait_for("state", lambda e: e["state"] == "speaking", within_s)
        except TimeoutError:
            return None
        return await self.wait_for(
            "transcript", lambda e: e["role"] == "assistant" and e["final"] and e["turn"] == 0
        )

    def first_audible(self, after: float, level_db: float = -40.0) -> float | None:
        """When the first reply sample above `level_db` arrived, among audio that arrived
        after `after` (20 ms chunks; the time is the sample's, within its chunk)."""
        threshold = 32768 * 10 ** (level_db / 20)
        for h in self.heard:
            if h.at < after or not len(h.pcm):
                continue
            loud = np.flatnonzero(np.abs(h.pcm.astype(np.int32)) > threshold)
            if len(loud):
                return h.at - (len(h.pcm) - int(loud[0])) / HEARD_RATE
        return None

    async def audible_after(self, after: float, within_s: float) -> float | None:
        """`first_audible(after)`, waiting up to `within_s` for it (None: nothing audible came)."""
        deadline = time.monotonic() + within_s
        while (at := self.first_audible(after)) is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return at

    def audible_ms(self, level_db: float = -40.0) -> float:
        """How much of what arrived was above `level_db` (in ms of audio)."""
        return sum(1000 * len(h.pcm) / HEARD_RATE for h in self.heard if dbfs(h.pcm) > level_db)

    async def close(self) -> None:
        await self.ws.close()
        await self.cancel_tasks()


class WebRTCCaller(Caller):
    """A browser: WebRTC audio both ways, events over `/ws`."""

    def __init__(self, ws: ClientConnection, pc: RTCPeerConnection, mic: Mic) -> None:
        super().__init__(ws, mic)
        self.pc = pc

    @classmethod
    async def connect(
        cls,
        url: str,
        persona: str | None = None,
        *,
        origin: str | None = None,
        jitter_frames: int = 1,
    ) -> WebRTCCaller:
        """`url`: the server's ws://host:port. A server on loopback is reached over loopback
        only, as the server itself gathers (see `ice_on_loopback`). `jitter_frames`: what the
        caller holds before decoding the reply (a browser's adaptive buffer holds about one
        20 ms frame on a quiet network; aiortc's default, 4, would add 60 ms to every figure)."""
        if is_loopback(urlsplit(url).hostname or ""):
            ice_on_loopback(True)
        ws = await connect(f"{url}/ws", origin=origin)  # type: ignore[arg-type]
        pc = peer_connection()
        mic = Mic(48000)
        pc.addTrack(MicTrack(mic))
        hold_frames(pc, jitter_frames)
        caller = cls(ws, pc, mic)
        try:

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                caller.create_task(caller._listen(track), "listen")

            await pc.setLocalDescription(await pc.createOffer())
            offer: dict[str, Any] = {"type": "offer", "sdp": pc.localDescription.sdp}
            if persona is not None:
                offer["persona"] = persona
            await ws.send(json.dumps(offer))
            async with asyncio.timeout(30):
                answer = json.loads(await ws.recv())
            if answer.get("type") != "answer":
                raise ConnectionError(f"the server answered {answer}")
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            caller.create_task(caller._read_events(), "events")
        except BaseException:
            await caller.close()
            raise
        return caller

    async def _read_events(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                await self._event(raw)
        self._gone()

    async def _listen(self, track: MediaStreamTrack) -> None:
        start, heard_s, self.behind_s = 0.0, 0.0, 0.0
        async for pcm in received_pcm(track, HEARD_RATE):
            now = time.monotonic()
            start = start or now - pcm.size / HEARD_RATE
            heard_s += pcm.size / HEARD_RATE
            self.behind_s = max(self.behind_s, now - start - heard_s)
            self._heard(pcm)

    async def close(self) -> None:
        await self.pc.close()
        await super().close()


class PcmCaller(Caller):
    """A program on `/pcm`: 16-bit PCM both ways at `rate`, events as JSON."""

    @classmethod
    async def connect(cls, url: str, persona: str | None = None, rate: int = 16000) -> PcmCaller:
        """`url`: the server's ws://host:port."""
        ws = await connect(f"{url}/pcm")
        caller = cls(ws, Mic(rate))
        try:
            start: dict[str, Any] = {"type": "start", "sample_rate": rate}
            if persona is not None:
                start["persona"] = persona
            await ws.send(json.dumps(start))
            caller.create_task(caller._read(), "read")
            caller.create_task(caller._talk(), "talk")
        except BaseException:
            await caller.close()
            raise
        return caller

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                if isinstance(raw, bytes):
                    pcm = np.frombuffer(raw, "<i2").astype(np.int16)
                    self._heard(resample(pcm, self.mic.rate, HEARD_RATE))
                else:
                    await self._event(raw)
        self._gone()

    async def _talk(self) -> None:
        clock = Clock(self.mic.rate)
        with contextlib.suppress(ConnectionClosed):
            while True:
                await clock.tick(self.mic.frame_samples)
                await self.ws.send(self.mic.next_frame().astype("<i2").tobytes())


class RealtimeCaller(Caller):
    """An OpenAI Realtime client on `/v1/realtime`: pcm16 at 24 kHz both ways, as base64 in
    events; the server's events are also kept as they came, in `realtime_events`."""

    RATE = 24000

    def __init__(self, ws: ClientConnection, mic: Mic) -> None:
        super().__init__(ws, mic)
        self.realtime_events: list[dict[str, Any]] = []
        self._said = ""

    @classmethod
    async def connect(cls, url: str, persona: str | None = None) -> RealtimeCaller:
        """`url`: the server's ws://host:port."""
        query = f"?persona={persona}" if persona is not None else ""
        ws = await connect(f"{url}/v1/realtime{query}", max_size=2**24)
        caller = cls(ws, Mic(cls.RATE))
        caller.create_task(caller._read(), "read")
        caller.create_task(caller._talk(), "talk")
        return caller

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                event = json.loads(raw)
                self.realtime_events.append(event)
                kind = event.get("type", "")
                if kind.endswith("audio.delta"):
                    pcm = np.frombuffer(base64.b64decode(event["delta"]), "<i2").astype(np.int16)
                    self._heard(resample(pcm, self.RATE, HEARD_RATE))
                for message in self._translate(kind, event):
                    await self._event(json.dumps(message))
        self._gone()

    def _translate(self, kind: str, e: dict[str, Any]) -> list[dict[str, Any]]:
        if kind == "session.created":
            return [{"type": "session", "id": e["session"].get("id")}]
        if kind == "conversation.item.input_audio_transcription.completed":
            return [{"type": "transcript", "role": "user", "text": e["transcript"], "final": True}]
        if kind == "response.created":
            self._said = ""
            return [{"type": "state", "state": "speaking"}]
        if kind.endswith("audio_transcript.delta"):
            self._said += e["delta"]
            text = self._said.strip()
            return [{"type": "transcript", "role": "assistant", "text": text, "final": False}]
        if kind == "response.done":
            output = e["response"].get("output") or [{}]
            content = (output[0].get("content") or [{}])[0]
            text = str(content.get("transcript") or content.get("text") or "")
            out = [{"type": "transcript", "role": "assistant", "text": text, "final": True}]
            if e["response"].get("status") == "cancelled":
                out.insert(0, {"type": "interrupted", "heard": text})
            return [*out, {"type": "state", "state": "listening"}]
        if kind == "error":
            return [{"type": "error", **e.get("error", {}), "fatal": False}]
        return []

    async def _talk(self) -> None:
        clock = Clock(self.mic.rate)
        with contextlib.suppress(ConnectionClosed):
            while True:
                await clock.tick(self.mic.frame_samples)
                audio = base64.b64encode(self.mic.next_frame().astype("<i2").tobytes())
                message = {"type": "input_audio_buffer.append", "audio": audio.decode("ascii")}
                await self.ws.send(json.dumps(message))


CALLERS: dict[str, type[WebRTCCaller] | type[PcmCaller] | type[RealtimeCaller]] = {
    "webrtc": WebRTCCaller,
    "pcm": PcmCaller,
    "realtime": RealtimeCaller,
}
"""The callers by the transport they use."""
