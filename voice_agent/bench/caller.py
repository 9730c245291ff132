"""A simulated caller: a WebRTC peer (aiortc) that talks to a voice-agent server like a browser.

`Caller.connect(url)` does the offer/answer over `/ws`, sends a scripted microphone (`say()`
queues speech; silence otherwise, as a real microphone sends) and records what comes back:
every event, and the reply's audio with its arrival time. Tests and benchmarks measure from the
audio itself: when the caller stopped talking, and when the reply became audible.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from websockets.asyncio.client import ClientConnection, connect

from voice_agent.audio.pcm import dbfs, resample
from voice_agent.frames import PCM
from voice_agent.tasks import TaskOwner

MIC_RATE = 48000
FRAME_MS = 20


@dataclass(slots=True)
class Said:
    """One utterance of the script: when its first and last samples went out (monotonic s)."""

    label: str
    started: float = 0.0
    ended: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class MicTrack(MediaStreamTrack):
    """The caller's microphone: scripted speech, silence in between, paced in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._frame = MIC_RATE * FRAME_MS // 1000
        self._lines: deque[tuple[PCM, Said]] = deque()
        self._pos = 0
        self._start: float | None = None
        self._pts = 0

    def say(self, pcm: PCM, rate: int, label: str = "") -> Said:
        said = Said(label)
        self._lines.append((resample(pcm, rate, MIC_RATE), said))
        return said

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += self._frame
            delay = self._start + self._pts / MIC_RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        frame = np.zeros(self._frame, np.int16)
        if self._lines:
            pcm, said = self._lines[0]
            if self._pos == 0:
                said.started = time.monotonic()
            part = pcm[self._pos : self._pos + self._frame]
            frame[: len(part)] = part
            self._pos += len(part)
            if self._pos >= len(pcm):
                said.ended = time.monotonic() + len(part) / MIC_RATE
                said.done.set()
                self._lines.popleft()
                self._pos = 0
        out = av.AudioFrame.from_ndarray(frame.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = MIC_RATE
        out.pts = self._pts
        out.time_base = fractions.Fraction(1, MIC_RATE)
        return out


@dataclass(slots=True)
class Heard:
    """A piece of the reply's audio (16 kHz) and when it arrived (monotonic s)."""

    at: float
    pcm: PCM


class Caller(TaskOwner):
    """One simulated browser; use `async with await Caller.connect(url) as caller`."""

    def __init__(self, ws: ClientConnection, pc: RTCPeerConnection, mic: MicTrack) -> None:
        super().__init__("caller")
        self.ws = ws
        self.pc = pc
        self.mic = mic
        self.events: list[dict[str, Any]] = []
        self.heard: list[Heard] = []
        self._news = asyncio.Condition()

    @classmethod
    async def connect(
        cls, url: str, persona: str | None = None, *, origin: str | None = None
    ) -> Caller:
        ws = await connect(f"{url}/ws", origin=origin)  # type: ignore[arg-type]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        mic = MicTrack()
        pc.addTrack(mic)
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
            answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if answer.get("type") != "answer":
                raise ConnectionError(f"the server answered {answer}")
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            caller.create_task(caller._read_events(), "events")
        except BaseException:
            await caller.close()
            raise
        return caller

    async def __aenter__(self) -> Caller:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def say(self, pcm: PCM, rate: int, label: str = "") -> Said:
        return self.mic.say(pcm, rate, label)

    async def _read_events(self) -> None:
        async for raw in self.ws:
            async with self._news:
                self.events.append(json.loads(raw))
                self._news.notify_all()

    async def _listen(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            now = time.monotonic()
            for out in resampler.resample(frame):
                self.heard.append(Heard(now, out.to_ndarray().reshape(-1).astype(np.int16)))

    async def wait_for(
        self,
        kind: str,
        where: Callable[[dict[str, Any]], bool] = lambda e: True,
        within_s: float = 30,
    ) -> dict[str, Any]:
        """The first event of `kind` (received so far or to come) that `where` accepts."""

        async def find() -> dict[str, Any]:
            async with self._news:
                while True:
                    for e in self.events:
                        if e.get("type") == kind and where(e):
                            return e
                    await self._news.wait()

        return await asyncio.wait_for(find(), within_s)

    def first_audible(self, after: float, level_db: float = -40.0) -> float | None:
        """When the first 20 ms of reply audio above `level_db` arrived after `after`."""
        for h in self.heard:
            if h.at >= after and len(h.pcm) and dbfs(h.pcm) > level_db:
                return h.at
        return None

    def audible_ms(self, level_db: float = -40.0) -> float:
        """How much of what arrived was above `level_db` (in ms of audio)."""
        return sum(1000 * len(h.pcm) / 16000 for h in self.heard if dbfs(h.pcm) > level_db)

    async def close(self) -> None:
        await self.pc.close()
        await self.ws.close()
        await self.cancel_tasks()
