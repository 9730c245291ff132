"""Session records on a real server on loopback: who may read them over HTTP, what the client
is told, and a real recorded session whose two channels line up with the client's own capture
of what it sent and heard."""

from __future__ import annotations

import asyncio
import json
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fakes import FakeASR, FakeLLM
from tests.servers import http_get, make_settings, ws_url
from tests.speech import speech_16k
from voice_agent.audio.vad import vad_factory
from voice_agent.bench.caller import PcmCaller
from voice_agent.bench.mic import Mic
from voice_agent.config import RecordSettings, Settings
from voice_agent.engines import Engines
from voice_agent.executor import EngineExecutor
from voice_agent.frames import PCM
from voice_agent.modelfiles import ModelStore
from voice_agent.persona import Voice
from voice_agent.records import RecordStore
from voice_agent.records.store import AUDIO, TRANSCRIPT
from voice_agent.server import Server
from voice_agent.server.records import NO_TOKEN

RATE = 16000
FRAME = RATE // 50
QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France, and it sits on the river Seine."


class SpeakingTTS:
    """Speaks with the real voice (the reply's audio must be speech, for the alignment)."""

    sample_rate = RATE

    def synthesize(self, text: str, voice: Voice) -> PCM:
        return speech_16k(text)


def recorded_settings(tmp_path: Path, **server: Any) -> Settings:
    base = make_settings(**server)
    records = RecordSettings(enabled=True, audio=True, dir=tmp_path / "sessions")
    return base.model_copy(update={"records": records})


@pytest.fixture
async def serve(store: ModelStore) -> AsyncIterator[Any]:
    servers: list[Server] = []

    async def start(settings: Settings) -> Server:
        engines = Engines(
            asr=FakeASR(["what is the capital of france"] * 10),
            llm=FakeLLM([ANSWER], repeat_last=True),
            tts={"piper": SpeakingTTS()},
            executor=EngineExecutor(workers=2),
            vad=vad_factory(settings.vad, store),
        )
        server = Server(settings, engines)
        await server.start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        await s.stop(0)
        s.engines.executor.shutdown()


# --- who may read records ---------------------------------------------------------------------


async def test_records_over_http_need_the_token_even_on_loopback(
    serve: Any, tmp_path: Path
) -> None:
    server = await serve(recorded_settings(tmp_path))
    for path in ("/sessions", "/sessions/20261203-194233-5f0c1a", "/sessions/x/audio.wav"):
        status, _, body = await http_get(server.url + path)
        assert status == 403 and body.decode().strip() == NO_TOKEN


async def test_with_the_token_records_are_served_and_bad_ids_are_not(
    serve: Any, tmp_path: Path
) -> None:
    server = await serve(recorded_settings(tmp_path, token="s3cret-token"))
    store = RecordStore(tmp_path / "sessions")
    record = store.new_id()
    folder = store.create(record)
    (folder / TRANSCRIPT).write_text('{"type": "session", "t_ms": 0, "persona": "tutor"}\n')
    audio = bytes(range(256)) * 40
    (folder / AUDIO).write_bytes(audio)
    bearer = {"Authorization": "Bearer s3cret-token"}
    assert (await http_get(server.url + "/sessions"))[0] == 401
    assert (await http_get(server.url + "/sessions?token=wrong"))[0] == 401
    status, kind, body = await http_get(server.url + "/sessions?token=s3cret-token")
    assert status == 200 and kind == "application/json"
    assert [r["id"] for r in json.loads(body)] == [record]
    status, kind, body = await http_get(f"{server.url}/sessions/{record}", bearer)
    assert status == 200 and json.loads(body)["persona"] == "tutor"
    status, kind, body = await http_get(f"{server.url}/sessions/{record}/audio.wav", bearer)
    assert status == 200 and kind == "audio/wav" and body == audio
    ranged = {**bearer, "Range": "bytes=100-199"}
    status, _, body = await http_get(f"{server.url}/sessions/{record}/audio.wav", ranged)
    assert status == 206 and body == audio[100:200]
    for bad in ("..%2f..%2fetc", "../sessions", "20261203-194233-000000", f"{record}/x"):
        status, _, body = await http_get(f"{server.url}/sessions/{bad}", bearer)
        assert status == 404, (bad, body)
        assert b"root:" not in body
    # the other rules stand: a Host that is not loopback is refused, token or not
    evil = {**bearer, "Host": "evil.example"}
    assert (await http_get(server.url + "/sessions", evil))[0] == 403


async def test_the_client_is_told_what_is_recorded(serve: Any, tmp_path: Path) -> None:
    for records, told in (
        ({}, {"transcript": False, "audio": False}),
        ({"enabled": True}, {"transcript": True, "audio": False}),
        ({"enabled": True, "audio": True}, {"transcript": True, "audio": True}),
    ):
        settings = make_settings().model_copy(
            update={"records": RecordSettings(dir=tmp_path / "r", **records)}
        )
        server = await serve(settings)
        async with await PcmCaller.connect(ws_url(server, "")) as caller:
            session = await caller.wait_for("session")
            assert session["recorded"] == told
        await server.stop(0)
        assert not records or len(RecordStore(tmp_path / "r").ids()) >= 1
    assert len(RecordStore(tmp_path / "r").ids()) == 2  # nothing when records are off


# --- a real recorded session -----------------------------------------------------------------


class CapturingMic(Mic):
    """The client's own capture of what it sent, each frame with when it went out."""

    def __init__(self, rate: int) -> None:
        super().__init__(rate)
        self.sent: list[tuple[float, PCM]] = []

    def next_frame(self) -> PCM:
        frame = super().next_frame()
        self.sent.append((time.monotonic(), frame))
        return frame


PAUSE_S = 0.1
"""Pieces that stop coming for this long beyond their own length end a stretch."""


def on_clock(pieces: list[tuple[float, PCM]], t0: float, n: int) -> np.ndarray:
    """A stream of pieces as the client keeps it on its own clock: a microphone's samples one
    after the other, a player's too, in stretches (a pause in the pieces ends one); each
    stretch from the earliest time consistent with when its pieces were sent or came (a stalled
    loop stamps some late, a buffer plays them in order)."""
    stretches: list[list[tuple[float, PCM]]] = []
    for i, (at, pcm) in enumerate(pieces):
        before_at, before = pieces[i - 1] if i else (at, pcm)
        if not i or at - before_at > len(before) / RATE + PAUSE_S:
            stretches.append([])
        stretches[-1].append((at, pcm))
    out = np.zeros(n, np.int16)
    for stretch in stretches:
        starts = np.cumsum([0] + [len(pcm) for _, pcm in stretch[:-1]]) / RATE
        origin = min(at - start for (at, _), start in zip(stretch, starts, strict=True))
        for (_, pcm), start in zip(stretch, starts, strict=True):
            pos = round((origin + start - t0) * RATE)
            if 0 <= pos < n:
                out[pos : pos + len(pcm)] = pcm[: n - pos]
    return out


def lag(recorded: np.ndarray, captured: np.ndarray) -> int:
    """Where `captured` lines up in `recorded` (samples), by cross-correlation."""
    a, b = recorded.astype(np.float64), captured.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    k = int(np.argmax(corr))
    return k if k < n // 2 else k - n


async def test_a_recordings_channels_line_up_with_the_clients_own_capture(
    serve: Any, tmp_path: Path
) -> None:
    server = await serve(recorded_settings(tmp_path))
    async with await PcmCaller.connect(ws_url(server, ""), rate=RATE) as caller:
        mic = CapturingMic(RATE)
        caller.mic = mic
        await caller.greeted()
        mark = len(caller.events)
        caller.say(speech_16k(QUESTION), RATE, "question")
        speaking = await caller.wait_for("state", lambda e: e["state"] == "speaking", 30, mark)
        after = next(i for i, e in enumerate(caller.events) if e is speaking)
        await caller.wait_for("state", lambda e: e["state"] == "listening", 30, after)
        await asyncio.sleep(0.3)
    await server.stop(0)
    store = RecordStore(tmp_path / "sessions")
    [record] = store.ids()
    with wave.open(str(store.audio(record))) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, RATE, 2)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    t0 = mic.sent[0][0]
    n = round((max(h.at for h in caller.heard) - t0) * RATE) + RATE
    sent = on_clock(mic.sent, t0, n)
    heard = on_clock([(h.at, h.pcm) for h in caller.heard], t0, n)
    assert np.abs(heard).max() > 1000 and np.abs(sent).max() > 1000
    left, right = lag(stereo[:, 0], sent), lag(stereo[:, 1], heard)
    assert abs(right - left) <= FRAME, (left, right)  # within one 20 ms frame
    # and the transcript says where the turn and its reply are, on the same clock
    lines = store.lines(record)
    turn = next(x for x in lines if x["type"] == "user_turn")
    greeting, reply = (x for x in lines if x["type"] == "reply")
    assert greeting["said"] == "greeting" and greeting["turn"] is None
    assert greeting["generated"] == greeting["heard"] != ""
    assert reply["generated"] == reply["heard"] == ANSWER and not reply["interrupted"]
    assert reply["said"] is None and reply["turn"] == turn["turn"]
    loud_ms = np.flatnonzero(np.abs(stereo[:, 1].astype(np.int32)) > 300) / RATE * 1000
    assert abs(loud_ms[0] - greeting["start_ms"]) <= 100
    assert abs(loud_ms[loud_ms > greeting["end_ms"]][0] - reply["start_ms"]) <= 100
    assert turn["start_ms"] < turn["end_ms"] < reply["start_ms"]
    assert lines[-1]["type"] == "session_ended"
