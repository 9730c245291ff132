"""The remote Realtime backbone against a fake remote speaking the minimal GA protocol."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import soxr
from websockets.asyncio.server import Server, ServerConnection, serve

from tests.fakes import FakeLLM
from tests.servers import MakeServer, fake_engines, free_port, make_settings, ws_url
from tests.speech import speech_16k
from voice_agent.backbone import realtime_client
from voice_agent.backbone.realtime_client import (
    RemoteConnectionLost,
    RemoteRealtime,
    RemoteRealtimeError,
)
from voice_agent.backbone.realtime_stages import RemoteAudioStage, RemoteReplyStage
from voice_agent.bench.caller import WebRTCCaller
from voice_agent.config import Settings
from voice_agent.engines import Engines
from voice_agent.frames import (
    DiscardTurnFrame,
    ErrorFrame,
    Frame,
    InputAudioFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    PlaybackInterruptedFrame,
    ResponseRequestFrame,
    TTSAudioFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnFrame,
)
from voice_agent.modelfiles import ModelStore
from voice_agent.pipeline import UP, Pipeline
from voice_agent.server import Server as VoiceServer
from voice_agent.tasks import TaskOwner

DELTA_SAMPLES = 2400  # 100 ms at 24 kHz
REPLY_TYPES = (LLMResponseStartFrame, TTSStartedFrame, TTSAudioFrame, LLMResponseEndFrame)


def sine(n: int, rate: int, hz: float = 440.0) -> np.ndarray:
    return (8000 * np.sin(2 * np.pi * hz * np.arange(n) / rate)).astype(np.int16)


class FakeRemote(TaskOwner):
    """Answers each response.create with `words`: a transcript delta then a 100 ms audio delta
    per word, `delay` s apart; what the client sent is kept in `received`."""

    def __init__(self) -> None:
        super().__init__("fake-remote")
        self.received: list[dict[str, Any]] = []
        self.audio = bytearray()
        self.headers: dict[str, str] = {}
        self.path = ""
        self.words = ["Hello", "there,", "friend."]
        self.tail = ""
        """Transcript that comes after the last audio."""
        self.late: list[dict[str, Any]] = []
        """Events of a cancelled response, sent after the next response has started."""
        self.delay = 0.0
        self.answer = True
        self.error_after: int | None = None
        """Send an `error` (not tied to a response) after this many words."""
        self.close_after: int | None = None
        self.refuse_session = False
        self.responses = 0
        self.server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> FakeRemote:
        self.server = await serve(self._handle, "127.0.0.1", 0, max_size=2**24)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1/realtime"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel_tasks()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def sent(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e["type"] == kind]

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.headers, self.path = dict(ws.request.headers), ws.request.path
        await _send(ws, {"type": "session.created", "session": {}})
        replying: asyncio.Task[None] | None = None
        async for message in ws:
            event = json.loads(message)
            self.received.append(event)
            kind = event["type"]
            if kind == "session.update":
                if self.refuse_session:
                    await _send(ws, {"type": "error", "error": {"message": "bad voice"}})
                else:
                    await _send(ws, {"type": "session.updated", "session": event["session"]})
            elif kind == "input_audio_buffer.append":
                self.audio += base64.b64decode(event["audio"])
            elif kind == "input_audio_buffer.commit":
                await _send(ws, {"type": "input_audio_buffer.committed", "item_id": "user"})
            elif kind == "response.create" and self.answer:
                self.responses += 1
                replying = self.create_task(self._reply(ws, self.responses), "reply")
            elif kind == "response.cancel" and replying is not None and not replying.done():
                replying.cancel()
                rid = f"r{self.responses}"
                done = {"type": "response.done", "response": {"id": rid, "status": "cancelled"}}
                self.late = [_transcript(self.responses, "late "), _audio(self.responses), done]

    async def _reply(self, ws: ServerConnection, n: int) -> None:
        rid = f"r{n}"
        await _send(ws, {"type": "response.created", "response": {"id": rid}})
        for event in self.late:
            await _send(ws, event)
        self.late.clear()
        item = {"id": f"a{n}", "type": "message", "role": "assistant"}
        await _send(ws, {"type": "response.output_item.added", "response_id": rid, "item": item})
        for i, word in enumerate(self.words):
            if i == self.error_after:
                await _send(
                    ws, {"type": "error", "error": {"type": "server_error", "message": "boom"}}
                )
                return
            if i == self.close_after:
                await ws.close()
                return
            await asyncio.sleep(self.delay)
            await _send(ws, _transcript(n, word + " "))
            await _send(ws, _audio(n))
        if self.tail:
            await _send(ws, _transcript(n, self.tail))
        await _send(ws, {"type": "response.done", "response": {"id": rid, "status": "completed"}})


def _transcript(n: int, text: str) -> dict[str, Any]:
    kind = "response.output_audio_transcript.delta"
    return {"type": kind, "response_id": f"r{n}", "item_id": f"a{n}", "delta": text}


def _audio(n: int) -> dict[str, Any]:
    pcm = base64.b64encode(sine(DELTA_SAMPLES, 24000).astype("<i2").tobytes()).decode()
    return {"type": "response.output_audio.delta", "response_id": f"r{n}", "delta": pcm}


async def _send(ws: ServerConnection, event: dict[str, Any]) -> None:
    await ws.send(json.dumps(event))


async def until(condition: Callable[[], bool]) -> None:
    """Until `condition` holds, at most 2 s."""
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out")


class Harness:
    """RemoteAudioStage + RemoteReplyStage in a real pipeline, against a fake remote."""

    def __init__(self, conn: RemoteRealtime, timeout_s: float = 2.0) -> None:
        self.conn = conn
        self.down: list[Frame] = []
        self.up: list[Frame] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.pipeline = Pipeline(
            [RemoteAudioStage(conn, preroll_ms=100), RemoteReplyStage(conn, timeout_s)],
            on_upstream=self.up.append,
            on_downstream=self.down.append,
            events=lambda event: self.events.append((event.type, event.data)),
        )

    def replies_ended(self) -> int:
        return sum(isinstance(f, TTSStoppedFrame) for f in self.down)

    def errors(self) -> list[ErrorFrame]:
        return [f for f in self.up if isinstance(f, ErrorFrame)]


@pytest.fixture
async def remote() -> AsyncIterator[FakeRemote]:
    async with FakeRemote() as fake:
        yield fake


@pytest.fixture
async def harness(remote: FakeRemote) -> AsyncIterator[Harness]:
    conn = await RemoteRealtime.connect(remote.url, timeout_s=2)
    h = Harness(conn)
    await h.pipeline.start()
    yield h
    await h.pipeline.stop()  # the reply stage closes the connection
    assert conn.closed.is_set() and not h.pipeline.tasks and not conn.tasks


async def test_connect_sets_up_the_session(remote: FakeRemote) -> None:
    conn = await RemoteRealtime.connect(
        remote.url, api_key="sk-test", model="gpt-realtime", instructions="Be brief.", voice="marin"
    )
    assert remote.path == "/v1/realtime?model=gpt-realtime"
    assert remote.headers["authorization"] == "Bearer sk-test"
    (update,) = remote.sent("session.update")
    audio = {"type": "audio/pcm", "rate": 24000}
    assert update["session"] == {
        "type": "realtime",
        "instructions": "Be brief.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": audio,
                "turn_detection": None,
                "transcription": {"model": "whisper-1"},
            },
            "output": {"format": audio, "voice": "marin"},
        },
    }
    await conn.close()
    await conn.close()  # idempotent
    assert not conn.tasks
    conn = await RemoteRealtime.connect(remote.url)
    assert "voice" not in remote.sent("session.update")[1]["session"]["audio"]["output"]
    assert "authorization" not in remote.headers
    await conn.close()


async def test_a_refused_session_update_is_an_error(remote: FakeRemote) -> None:
    remote.refuse_session = True
    with pytest.raises(RemoteRealtimeError, match="bad voice"):
        await RemoteRealtime.connect(remote.url)


async def test_a_closed_port_is_a_clear_error() -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1/realtime"
    with pytest.raises(RemoteRealtimeError, match=f"cannot connect to realtime remote {url}"):
        await RemoteRealtime.connect(url, timeout_s=2)


async def test_a_remote_that_stops_reading_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realtime_client, "SEND_TIMEOUT_S", 0.5)

    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A WebSocket server that says hello, then never reads again."""
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        for kind in ("session.created", "session.updated"):
            payload = json.dumps({"type": kind}).encode()
            writer.write(bytes([0x81, len(payload)]) + payload)  # one unmasked text frame
        await writer.drain()
        await asyncio.sleep(30)

    server = await asyncio.start_server(stalled, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = await RemoteRealtime.connect(f"ws://127.0.0.1:{port}/v1/realtime", timeout_s=5)
    try:
        with pytest.raises(RemoteConnectionLost, match=r"took nothing for 0\.5 s"):
            for _ in range(100_000):  # 100 ms appends, until the socket's buffers are full
                await conn.append(np.zeros(1600, np.int16))
        assert conn.closed.is_set()
    finally:
        await conn.close()
        server.close()


async def test_speech_reaches_the_remote_at_24k_with_preroll(
    remote: FakeRemote, harness: Harness
) -> None:
    signal = sine(16000, 16000)  # 1 s; 20 ms frames
    frames = [
        InputAudioFrame(pcm=signal[i : i + 320], sample_rate=16000) for i in range(0, 16000, 320)
    ]
    p = harness.pipeline
    for f in frames[:20]:  # 400 ms before the speech is confirmed: 100 ms of it is preroll
        p.queue(f)
    p.queue(UserStartedSpeakingFrame())
    for f in frames[20:40]:  # 400 ms of speech
        p.queue(f)
    p.queue(UserStoppedSpeakingFrame())
    for f in frames[40:]:  # after the pause: not sent
        p.queue(f)
    await until(lambda: sum(isinstance(f, InputAudioFrame) for f in harness.down) == 50)
    assert [f for f in harness.down if isinstance(f, InputAudioFrame)] == frames  # unchanged
    await asyncio.sleep(0.05)
    sent = np.frombuffer(bytes(remote.audio), "<i2")
    expected = soxr.resample(signal[15 * 320 : 40 * 320], 16000, 24000)  # 500 ms
    assert len(expected) - 480 < len(sent) <= len(expected)  # (the resampler keeps a few ms)
    assert np.abs(sent.astype(int) - expected[: len(sent)]).max() < 50  # no seams between chunks
    assert not remote.sent("input_audio_buffer.commit")
    p.queue(UserTurnFrame(text="hi", turn=1))
    await until(lambda: harness.replies_ended() == 1)
    kinds = [e["type"] for e in remote.received]
    assert kinds.index("input_audio_buffer.commit") < kinds.index("response.create")


async def test_a_turn_is_answered_with_speech_and_events(
    remote: FakeRemote, harness: Harness
) -> None:
    remote.tail = "Bye."
    turn = UserTurnFrame(text="hi", turn=1)
    harness.pipeline.queue(turn)
    await until(lambda: harness.replies_ended() == 1)
    assert harness.down[1] is turn  # passed on first: playback reads its turn
    reply = harness.down[2:]
    assert [type(f) for f in reply] == [
        LLMResponseStartFrame,
        TTSStartedFrame,
        TTSAudioFrame,
        TTSAudioFrame,
        TTSAudioFrame,
        LLMResponseEndFrame,
        TTSStoppedFrame,
    ]
    audio = [f for f in reply if isinstance(f, TTSAudioFrame)]
    assert {(f.sample_rate, len(f.pcm)) for f in audio} == {(24000, DELTA_SAMPLES)}
    assert [f.text for f in audio] == ["Hello ", "there, ", "friend. Bye."]  # (the tail too)
    assert np.array_equal(audio[0].pcm, sine(DELTA_SAMPLES, 24000))
    assert not remote.sent("input_audio_buffer.commit")  # nothing was said: no empty commit
    kinds = [k for k, _ in harness.events]
    assert kinds == [
        "llm_started",
        "llm_first_token",
        "first_clause",
        "tts_chunk",
        "tts_first_chunk",
        "tts_chunk",
        "tts_chunk",
        "tts_chunk",
        "llm_done",
    ]
    data = dict(harness.events)
    assert data["first_clause"] == {"text": "Hello "}
    assert data["tts_first_chunk"] == {"text": "Hello ", "ms": 100}
    assert data["llm_done"] == {"text": "Hello there, friend. Bye.", "id": None}


async def test_a_turn_that_asks_for_no_reply_only_commits(
    remote: FakeRemote, harness: Harness
) -> None:
    p = harness.pipeline
    p.queue(UserStartedSpeakingFrame())
    p.queue(InputAudioFrame(pcm=sine(3200, 16000), sample_rate=16000))
    p.queue(UserStoppedSpeakingFrame())
    p.queue(UserTurnFrame(text="hi", turn=1, respond=False))
    await until(lambda: len(remote.sent("input_audio_buffer.commit")) == 1)
    await asyncio.sleep(0.05)
    assert not remote.sent("response.create")
    assert not any(isinstance(f, REPLY_TYPES) for f in harness.down)
    p.queue(ResponseRequestFrame())  # the client asks now
    await until(lambda: any(isinstance(f, LLMResponseEndFrame) for f in harness.down))
    assert len(remote.sent("response.create")) == 1


async def test_a_discarded_turn_clears_the_remote_buffer(
    remote: FakeRemote, harness: Harness
) -> None:
    p = harness.pipeline
    p.queue(UserStartedSpeakingFrame())
    p.queue(InputAudioFrame(pcm=sine(3200, 16000), sample_rate=16000))
    p.queue(UserStoppedSpeakingFrame())
    p.queue(DiscardTurnFrame())
    await until(lambda: bool(remote.sent("input_audio_buffer.clear")))
    p.queue(UserTurnFrame(text="hi", turn=1, respond=False))
    await asyncio.sleep(0.1)
    assert not remote.sent("input_audio_buffer.commit")  # nothing left to commit


@pytest.mark.parametrize(
    ("played_ms", "cut_at"),
    [(80, 80), (0, None), (900, 100)],  # None: deleted; past the audio it got: all of it
)
async def test_an_interruption_cancels_the_reply_and_cuts_it_to_what_was_heard(
    remote: FakeRemote, harness: Harness, played_ms: int, cut_at: int | None
) -> None:
    remote.delay = 0.3
    p = harness.pipeline
    p.queue(UserTurnFrame(text="hi", turn=1))
    await until(lambda: any(isinstance(f, TTSAudioFrame) for f in harness.down))
    p.interrupt("barge-in")
    await until(lambda: bool(remote.sent("response.cancel")))
    assert remote.sent("response.cancel")[0].get("response_id") == "r1"
    p.queue(PlaybackInterruptedFrame(played_ms=played_ms, heard_text="Hello"), UP)
    if cut_at is not None:
        await until(lambda: bool(remote.sent("conversation.item.truncate")))
        (cut,) = remote.sent("conversation.item.truncate")
        assert (cut["item_id"], cut["audio_end_ms"], cut["content_index"]) == ("a1", cut_at, 0)
        assert not remote.sent("conversation.item.delete")
    else:
        await until(lambda: bool(remote.sent("conversation.item.delete")))
        assert remote.sent("conversation.item.delete")[0]["item_id"] == "a1"
        assert not remote.sent("conversation.item.truncate")
    assert any(isinstance(f, PlaybackInterruptedFrame) for f in harness.up)  # passed on
    assert harness.replies_ended() == 0  # the cut reply's end died with it
    # the cancelled reply's late events (the fake sends them once the next response has begun)
    # go nowhere: the next reply is the next response's own
    mark = len(harness.down)
    remote.delay = 0.0
    p.queue(UserTurnFrame(text="go on", turn=2))
    await until(lambda: harness.replies_ended() == 1)
    texts = [f.text for f in harness.down[mark:] if isinstance(f, TTSAudioFrame)]
    assert texts == ["Hello ", "there, ", "friend. "]
    assert not harness.errors()


async def test_a_remote_error_mid_reply_ends_it_and_the_next_turn_works(
    remote: FakeRemote, harness: Harness
) -> None:
    remote.error_after = 1
    p = harness.pipeline
    p.queue(UserTurnFrame(text="hi", turn=1))
    await until(lambda: bool(harness.errors()))
    (error,) = harness.errors()
    assert not error.fatal and error.source == "realtime" and "boom" in error.message
    assert harness.replies_ended() == 1  # playback can close the reply
    ends = [type(f) for f in harness.down if isinstance(f, LLMResponseEndFrame | TTSStoppedFrame)]
    assert ends == [LLMResponseEndFrame, TTSStoppedFrame]
    assert remote.sent("response.cancel")
    remote.error_after = None
    p.queue(UserTurnFrame(text="again", turn=2))
    await until(lambda: harness.replies_ended() == 2)
    assert len(harness.errors()) == 1


async def test_a_remote_that_never_answers_times_out(remote: FakeRemote) -> None:
    remote.answer = False
    conn = await RemoteRealtime.connect(remote.url)
    h = Harness(conn, timeout_s=0.3)
    await h.pipeline.start()
    h.pipeline.queue(UserTurnFrame(text="hi", turn=1))
    await until(lambda: bool(h.errors()))
    (error,) = h.errors()
    assert not error.fatal and "did not answer within 0.3 s" in error.message
    assert h.replies_ended() == 1
    await until(lambda: bool(remote.sent("response.cancel")))
    await h.pipeline.stop()


async def test_the_remote_closing_ends_the_session(remote: FakeRemote, harness: Harness) -> None:
    remote.close_after = 1
    harness.pipeline.queue(UserTurnFrame(text="hi", turn=1))
    await until(lambda: bool(harness.errors()))
    await asyncio.sleep(0.05)
    (error,) = harness.errors()  # one error, and it ends the session
    assert error.fatal and error.source == "realtime" and remote.url in error.message
    assert harness.replies_ended() == 1


# --- against our own /v1/realtime, over the WebRTC transport ---------------------------------

QUESTION = "What is the capital of France?"
LONG = " ".join(["one two three four five six seven eight nine ten"] * 3) + "."
"""30 words: 3 s of FakeTTS audio, long enough to be interrupted on a busy machine."""


def _backbone_settings(remote: VoiceServer) -> Settings:
    return Settings.model_validate(
        {
            **make_settings().model_dump(),
            "engines": {
                "backbone": "realtime",
                "realtime": {
                    "url": ws_url(remote, "/v1/realtime"),
                    "model": "voice-agent",
                    "voice": "concierge",
                },
            },
        }
    )


async def test_a_webrtc_conversation_through_a_remote_realtime_backbone(
    make_server: MakeServer, store: ModelStore
) -> None:
    remote = await make_server(fake_engines(store, make_settings(), 50, LONG))
    local = VoiceServer(
        _backbone_settings(remote), fake_engines(store, make_settings(), speaks=False)
    )
    await local.start()
    try:
        async with await WebRTCCaller.connect(ws_url(local, "")) as caller:
            await caller.wait_for("session")
            caller.say(speech_16k(QUESTION), 16000, "question")
            reply = await caller.wait_for(
                "transcript", lambda e: e["role"] == "assistant" and not e["final"], within_s=15
            )
            assert LONG.startswith(reply["text"].split()[0])
            metrics = await caller.wait_for("turn_metrics")
            assert metrics["voice_to_voice_ms"] > 0 and metrics["tts_first_chunk_ms"] > 0
            await asyncio.sleep(0.4)
            caller.say(speech_16k(QUESTION), 16000, "barge-in")  # over the reply
            cut = await caller.wait_for("interrupted", within_s=10)
            heard = cut["heard"].split()
            assert 1 <= len(heard) < len(LONG.split())
            await caller.wait_for(  # the barge-in was a turn: its answer begins
                "transcript",
                lambda e: e["role"] == "assistant" and not e["final"],
                within_s=15,
                after=caller.events.index(cut),
            )
        remote_llm = remote.engines.llm
        assert isinstance(remote_llm, FakeLLM)
        persona = local.personas.get("concierge")
        assert remote_llm.prompts[0][0]["content"].startswith(persona.system_prompt.strip())
        assert len(remote_llm.prompts) >= 2
        said = [m["content"] for m in remote_llm.prompts[1] if m["role"] == "assistant"][-1]
        # the remote cut its reply at the audio the caller heard (give or take a word: the
        # remote counts words by the share of audio, we by the words' own chunks)
        assert LONG.startswith(said.rstrip(".")) and abs(len(said.split()) - len(heard)) <= 1
    finally:
        await local.stop(0)
        local.engines.executor.shutdown()


@pytest.mark.slow
async def test_the_real_models_behind_our_own_realtime_api(real_engines: Engines) -> None:
    remote = VoiceServer(make_settings(), real_engines)
    await remote.start()
    local = VoiceServer(_backbone_settings(remote), real_engines)
    await local.start()
    try:
        async with await WebRTCCaller.connect(ws_url(local, "")) as caller:
            await caller.wait_for("session")
            said = caller.say(speech_16k(QUESTION), 16000, "question")
            user = await caller.wait_for(
                "transcript", lambda e: e["role"] == "user" and e["final"], within_s=30
            )
            assert "capital" in user["text"].lower()
            reply = await caller.wait_for(
                "transcript", lambda e: e["role"] == "assistant" and e["final"], within_s=60
            )
            assert reply["text"].strip()
            assert caller.first_audible(said.ended) is not None and caller.audible_ms() > 300
    finally:
        await local.stop(0)
        await remote.stop(0)
