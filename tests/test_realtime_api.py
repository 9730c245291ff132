"""`/v1/realtime`: the official `openai` SDK's realtime client against our server.

Fast tests run the server with fake engines (and the real VAD) on real speech; one slow test
runs the real models. Audio goes in faster than real time (the turn logic counts silence in
samples); the reply comes back paced in real time.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import connect

from tests.fakes import FakeLLM, FakeTTS
from tests.servers import MakeServer, fake_engines, make_settings, ws_url
from tests.speech import silence_16k, speech_16k
from voice_agent.audio.pcm import resample
from voice_agent.config import Settings
from voice_agent.engines import Engines
from voice_agent.modelfiles import ModelStore
from voice_agent.server import Server

QUESTION = "What is the capital of France?"
LONG = "One two three four five six seven eight nine ten eleven twelve thirteen fourteen."


def engines(store: ModelStore, reply: str = "Paris is the capital.") -> Engines:
    return fake_engines(store, make_settings(), 50, reply)


def llm(server: Server) -> FakeLLM:
    assert isinstance(server.engines.llm, FakeLLM)
    return server.engines.llm


def pcm24(pcm16k: np.ndarray) -> bytes:
    return resample(pcm16k, 16000, 24000).astype("<i2").tobytes()


class Client:
    """An SDK connection, with every event it received kept."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.events: list[Any] = []

    async def next(self, kind: str, within_s: float = 15) -> Any:
        """Events up to the first of `kind` (kept in `events`); that one."""

        async def read() -> Any:
            while True:
                event = await self.conn.recv()
                self.events.append(event)
                if event.type == kind:
                    return event

        return await asyncio.wait_for(read(), within_s)

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.events if e.type == kind]

    async def append(self, audio: bytes, chunk: int = 4800) -> None:
        for i in range(0, len(audio), chunk):
            encoded = base64.b64encode(audio[i : i + chunk]).decode()
            await self.conn.input_audio_buffer.append(audio=encoded)

    def audio_ms(self) -> float:
        deltas = self.of("response.output_audio.delta")
        return sum(len(base64.b64decode(d.delta)) for d in deltas) / 2 / 24


@asynccontextmanager
async def realtime(server: Server, **extra: Any) -> AsyncIterator[Client]:
    client = AsyncOpenAI(api_key="unused", websocket_base_url=ws_url(server, "/v1"))
    async with client.realtime.connect(model="voice-agent", **extra) as conn:
        c = Client(conn)
        created = await c.next("session.created")
        assert created.session.audio.output.format.rate == 24000
        yield c


async def test_a_spoken_turn_gets_a_spoken_answer(
    make_server: MakeServer, store: ModelStore
) -> None:
    server = await make_server(engines(store))
    async with realtime(server) as c:
        await c.conn.session.update(
            session={
                "type": "realtime",
                "instructions": "Answer in one short sentence.",
                "audio": {"output": {"voice": "concierge"}},
            }
        )
        updated = await c.next("session.updated")
        assert updated.session.instructions == "Answer in one short sentence."
        assert updated.session.audio.input.turn_detection.type == "server_vad"
        await c.append(pcm24(np.concatenate([speech_16k(QUESTION), silence_16k(1.5)])))
        done = await c.next("response.done")
    kinds = [e.type for e in c.events]
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    positions = [kinds.index(k) for k in order]
    assert positions == sorted(positions), kinds
    started = c.of("input_audio_buffer.speech_started")[0]
    stopped = c.of("input_audio_buffer.speech_stopped")[0]
    speech_ms = len(speech_16k(QUESTION)) / 16
    assert 0 <= started.audio_start_ms < 400
    assert abs(stopped.audio_end_ms - speech_ms) < 300
    user = c.of("conversation.item.input_audio_transcription.completed")[0]
    assert user.transcript == "what is the capital of france"
    assert user.item_id == started.item_id == c.of("input_audio_buffer.committed")[0].item_id
    assert done.response.status == "completed"
    item = done.response.output[0]
    assert item.role == "assistant" and item.content[0].transcript == "Paris is the capital."
    deltas = "".join(d.delta for d in c.of("response.output_audio_transcript.delta"))
    assert deltas.split() == ["Paris", "is", "the", "capital."]
    assert 380 <= c.audio_ms() <= 420  # FakeTTS: 4 words x 100 ms
    prompt = llm(server).prompts[-1]
    # the instructions replace the persona's prompt; its manners (never_say) stay
    assert prompt[0]["content"].startswith("Answer in one short sentence.\nNever say:")
    assert prompt[-1] == {"role": "user", "content": "what is the capital of france"}


async def test_without_turn_detection_the_client_commits_and_asks(
    make_server: MakeServer, store: ModelStore
) -> None:
    server = await make_server(engines(store))
    async with realtime(server) as c:
        await c.conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        assert (await c.next("session.updated")).session.audio.input.turn_detection is None
        await c.append(pcm24(speech_16k(QUESTION)))  # no trailing silence: the client decides
        await c.conn.input_audio_buffer.commit()
        committed = await c.next("input_audio_buffer.committed")
        user = await c.next("conversation.item.input_audio_transcription.completed")
        assert user.item_id == committed.item_id
        assert user.transcript == "what is the capital of france"
        await asyncio.sleep(0.5)
        assert not c.of("response.created"), "no reply until the client asks"
        assert not c.of("input_audio_buffer.speech_started")
        await c.conn.response.create()
        done = await c.next("response.done")
        assert done.response.status == "completed"
        assert c.audio_ms() >= 380
        await c.conn.input_audio_buffer.commit()  # nothing appended since
        error = await c.next("error")
        assert error.error.code == "input_audio_buffer_commit_empty"


async def test_response_cancel_stops_the_reply_and_keeps_what_was_heard(
    make_server: MakeServer, store: ModelStore
) -> None:
    server = await make_server(engines(store, LONG))
    async with realtime(server) as c:
        await c.append(pcm24(np.concatenate([speech_16k(QUESTION), silence_16k(1.5)])))
        await c.next("response.output_audio.delta")
        await asyncio.sleep(0.45)
        await c.conn.response.cancel()
        done = await c.next("response.done")
        assert done.response.status == "cancelled"
        truncated = c.of("conversation.item.truncated")
        assert truncated and truncated[0].item_id == done.response.output[0].id
        heard = done.response.output[0].content[0].transcript
        assert 1 <= len(heard.split()) < len(LONG.split()), heard
        assert c.audio_ms() < 1000  # 14 words would be 1400 ms
        # what the LLM reads next is what was heard
        await c.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "go on"}],
            }
        )
        await c.next("conversation.item.created")
        await c.conn.response.create()
        await c.next("response.done")
        prompt = llm(server).prompts[-1]
        assert prompt[-2] == {"role": "assistant", "content": heard}
        assert prompt[-1] == {"role": "user", "content": "go on"}
        await c.conn.response.cancel()  # nothing in progress now
        assert (await c.next("error")).error.code == "response_cancel_not_active"


async def test_with_interrupt_response_off_speech_waits_for_the_reply_to_end(
    make_server: MakeServer, store: ModelStore
) -> None:
    server = await make_server(engines(store, LONG))
    async with realtime(server) as c:
        vad = {"type": "server_vad", "interrupt_response": False}
        await c.conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": vad}}}
        )
        await c.next("session.updated")
        question = pcm24(np.concatenate([speech_16k(QUESTION), silence_16k(1.5)]))
        await c.append(question)
        await c.next("response.output_audio.delta")
        await c.append(question)  # asked again, over the reply
        first = await c.next("response.done")
        assert first.response.status == "completed"
        assert first.response.output[0].content[0].transcript == LONG
        assert c.audio_ms() == pytest.approx(1400, abs=30)  # all of it was played
        second = await c.next("response.done")
    assert second.response.status == "completed"
    users = c.of("conversation.item.input_audio_transcription.completed")
    assert [u.transcript for u in users] == ["what is the capital of france"] * 2


async def test_items_can_be_created_truncated_and_deleted(
    make_server: MakeServer, store: ModelStore
) -> None:
    server = await make_server(engines(store, LONG))
    async with realtime(server) as c:
        text = {"type": "input_text", "text": "Count to fourteen."}
        await c.conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [text]}
        )
        user = (await c.next("conversation.item.created")).item
        await c.conn.response.create()
        done = await c.next("response.done", within_s=20)
        reply = done.response.output[0]
        assert reply.content[0].transcript == LONG
        await c.conn.conversation.item.truncate(item_id=reply.id, content_index=0, audio_end_ms=500)
        truncated = await c.next("conversation.item.truncated")
        assert truncated.audio_end_ms == 500
        await c.conn.conversation.item.truncate(
            item_id=reply.id, content_index=0, audio_end_ms=99_000
        )
        assert (await c.next("error")).error.param == "audio_end_ms"
        for words in ("And then?", "Forget this."):
            part = {"type": "input_text", "text": words}
            await c.conn.conversation.item.create(
                item={"type": "message", "role": "user", "content": [part]}
            )
        extra = (await c.next("conversation.item.created")).item
        extra = (await c.next("conversation.item.created")).item
        await c.conn.conversation.item.delete(item_id=extra.id)
        assert (await c.next("conversation.item.deleted")).item_id == extra.id
        await c.conn.conversation.item.delete(item_id="item_nope")
        assert (await c.next("error")).error.code == "item_not_found"
        await c.conn.response.create()
        await c.next("response.done", within_s=20)
        prompt = llm(server).prompts[-1]
        # 500 ms of the 1400 ms reply: 5 of its 14 words; the deleted item is gone
        assert prompt[-3:] == [
            {"role": "user", "content": "Count to fourteen."},
            {"role": "assistant", "content": "One two three four five"},
            {"role": "user", "content": "And then?"},
        ]
        assert user.id != extra.id


async def test_a_bad_event_gets_an_error_and_the_session_goes_on(
    make_server: MakeServer, store: ModelStore
) -> None:
    server = await make_server(engines(store))
    async with connect(ws_url(server, "/v1/realtime")) as ws:

        async def next_event(kind: str) -> dict[str, Any]:
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if event["type"] == kind:
                    return event

        await next_event("session.created")
        bad: list[tuple[str | bytes, str]] = [
            ("{not json", "invalid_json"),
            ("[1, 2]", "invalid_event"),
            (json.dumps({"type": "response.teleport"}), "unknown_event"),
            (json.dumps({"event_id": "e1"}), "invalid_event"),
            (b"\x00\x01binary", "invalid_event"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}), "invalid_audio"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "AA=="}), "invalid_audio"),
            (json.dumps({"type": "input_audio_buffer.append"}), "invalid_value"),
            (
                json.dumps({"type": "session.update", "session": {"voice": "nobody"}}),
                "invalid_value",
            ),
            (
                json.dumps(
                    {"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}}
                ),
                "unsupported_format",
            ),
            (
                json.dumps(
                    {"type": "session.update", "session": {"turn_detection": {"type": "magic"}}}
                ),
                "invalid_value",
            ),
            (json.dumps({"type": "conversation.item.truncate", "item_id": 7}), "invalid_value"),
            (
                json.dumps(
                    {
                        "type": "conversation.item.create",
                        "item": {"type": "function_call", "name": "f"},
                    }
                ),
                "unsupported_item",
            ),
        ]
        for message, code in bad:
            await ws.send(message)
            error = await next_event("error")
            assert error["error"]["code"] == code, (message, error)
        await ws.send(json.dumps({"type": "response.teleport", "event_id": "mine"}))
        assert (await next_event("error"))["error"]["event_id"] == "mine"
        await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "Hi."}}))
        assert (await next_event("session.updated"))["session"]["instructions"] == "Hi."


async def test_a_beta_client_gets_the_beta_names(
    make_server: MakeServer, store: ModelStore
) -> None:
    server = await make_server(engines(store))
    headers = {"OpenAI-Beta": "realtime=v1"}
    async with connect(ws_url(server, "/v1/realtime"), additional_headers=headers) as ws:
        kinds: list[str] = []
        session = json.loads(await ws.recv())
        assert session["type"] == "session.created"
        assert session["session"]["input_audio_format"] == "pcm16"
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {"voice": "joe", "turn_detection": {"type": "server_vad"}},
                }
            )
        )
        audio = pcm24(np.concatenate([speech_16k(QUESTION), silence_16k(1.5)]))
        for i in range(0, len(audio), 9600):
            chunk = base64.b64encode(audio[i : i + 9600]).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        while "response.done" not in kinds:
            kinds.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["type"])
    assert "response.audio.delta" in kinds and "response.audio_transcript.delta" in kinds
    assert "response.audio.done" in kinds
    assert not any(k.startswith("response.output_audio") for k in kinds)


async def test_text_only_replies(make_server: MakeServer, store: ModelStore) -> None:
    server = await make_server(engines(store))
    async with realtime(server) as c:
        await c.conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await c.next("session.updated")
        await c.append(pcm24(np.concatenate([speech_16k(QUESTION), silence_16k(1.5)])))
        done = await c.next("response.done")
    assert done.response.output[0].content[0].type == "output_text"
    text = "".join(d.delta for d in c.of("response.output_text.delta"))
    assert text.split() == ["Paris", "is", "the", "capital."]
    assert c.of("response.output_text.done")[0].text == "Paris is the capital."
    assert not c.of("response.output_audio.delta")
    tts = server.engines.tts["piper"]
    assert isinstance(tts, FakeTTS) and tts.spoken == []


async def test_the_input_buffer_is_bounded(store: ModelStore) -> None:
    settings = Settings.model_validate({**make_settings().model_dump(), "audio": {"max_turn_s": 2}})
    server = Server(settings, engines(store))
    await server.start()
    try:
        await _bounded_buffer(server)
    finally:
        await server.stop(0)


async def _bounded_buffer(server: Server) -> None:
    async with realtime(server) as c:
        await c.conn.session.update(
            session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        await c.next("session.updated")
        await c.append(bytes(2 * 24000 * 3), chunk=48000)  # 3 s, in 1 s appends
        error = await c.next("error")
        assert error.error.code == "input_audio_buffer_full"
        await c.conn.input_audio_buffer.clear()
        await c.next("input_audio_buffer.cleared")
        await c.append(bytes(2 * 24000), chunk=48000)  # room again after the clear
        await c.conn.input_audio_buffer.commit()
        await c.next("input_audio_buffer.committed")
        assert len(c.of("error")) == 1


# --- the real models -------------------------------------------------------------------------


@pytest.mark.slow
async def test_the_sdk_talks_to_the_real_models(real_engines: Engines) -> None:
    server = Server(make_settings(), real_engines)
    await server.start()
    try:
        async with realtime(server) as c:
            await c.append(pcm24(np.concatenate([speech_16k(QUESTION), silence_16k(2.0)])))
            user = await c.next("conversation.item.input_audio_transcription.completed", 30)
            assert "capital" in user.transcript.lower() and "france" in user.transcript.lower()
            done = await c.next("response.done", 60)
            assert done.response.status == "completed"
            assert done.response.output[0].content[0].transcript.strip()
            assert c.audio_ms() > 300
    finally:
        await server.stop(0)
