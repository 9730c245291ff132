"""The server on loopback: HTTP routes, access rules, session limits, garbage, `/pcm`, WebRTC.

Fast tests run the real server, the real VAD and real WebSocket/WebRTC peers with fake
engines (tests/fakes.py); the tests marked `slow` talk to the real models.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import threading
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.fakes import FakeASR, FakeLLM, FakeTTS
from tests.servers import MakeServer, fake_engines, http_get, make_settings, ws_url
from tests.speech import silence_16k, speech_16k
from tests.wer import wer
from voice_agent.audio.pcm import dbfs, resample
from voice_agent.bench.caller import PcmCaller, WebRTCCaller
from voice_agent.config import Settings
from voice_agent.engines import Engines
from voice_agent.executor import EngineExecutor
from voice_agent.modelfiles import ModelStore
from voice_agent.persona import PersonaStore
from voice_agent.server import Server, ServerError

QUESTION = "What is the capital of France?"


async def events_until(
    ws: ClientConnection, kind: str, within_s: float = 10
) -> list[dict[str, Any]]:
    """JSON messages up to and including the first of `kind` (binary audio skipped)."""
    out: list[dict[str, Any]] = []

    async def read() -> None:
        async for raw in ws:
            if isinstance(raw, str):
                out.append(json.loads(raw))
                if out[-1]["type"] == kind:
                    return
        raise AssertionError(f"closed before {kind!r}: {out}")

    await asyncio.wait_for(read(), within_s)
    return out


# --- HTTP ----------------------------------------------------------------------------------


async def test_page_static_files_personas_health_and_metrics(make_server: MakeServer) -> None:
    server = await make_server()
    status, kind, body = await http_get(server.url + "/")
    assert status == 200 and kind.startswith("text/html") and b"<html" in body.lower()
    scripts = [f for f in os.listdir(server_web_dir()) if f.endswith(".js")]
    assert scripts, "the page has no script"
    status, kind, _ = await http_get(f"{server.url}/static/{scripts[0]}")
    assert status == 200 and kind.startswith("text/javascript")
    status, _, body = await http_get(server.url + "/personas")
    personas = json.loads(body)
    assert status == 200 and {"concierge", "tutor"} <= {p["id"] for p in personas}
    assert [p["id"] for p in personas if p["default"]] == ["concierge"]
    await asyncio.sleep(0.25)  # the loop's lag is sampled every 100 ms
    status, _, body = await http_get(server.url + "/healthz")
    health = json.loads(body)
    lag = health.pop("loop_lag_ms")
    assert status == 200 and health == {
        "status": "ok",
        "sessions": 0,
        "max_sessions": 16,
        "engines": {},  # fake engines: nothing runs apart
    }
    assert set(lag) == {"p50", "p95", "max"} and 0 <= lag["p50"] <= lag["p95"] <= lag["max"]
    status, kind, body = await http_get(server.url + "/metrics")
    assert status == 200 and kind.startswith("text/plain")
    assert b"voice_agent_sessions_active 0.0" in body
    assert b"voice_agent_event_loop_lag_seconds_count" in body


def server_web_dir() -> str:
    from voice_agent.server import WEB_DIR

    return str(WEB_DIR)


@pytest.mark.parametrize(
    "path",
    [
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/..%2fserver.py",
        "/static/.hidden",
        "/static/",
        "/static//etc/passwd",
        "/nothing-here",
        "/ui/web/index.html",
    ],
)
async def test_unknown_paths_and_traversal_get_404(make_server: MakeServer, path: str) -> None:
    server = await make_server()
    status, _, body = await http_get(server.url + path)
    assert status == 404, body
    assert b"root:" not in body and b"import" not in body


async def test_a_server_reachable_from_elsewhere_needs_a_token() -> None:
    settings = Settings.model_validate({"server": {"host": "0.0.0.0"}})
    engines = Engines(FakeASR([]), FakeLLM([]), {"piper": FakeTTS()}, EngineExecutor(1))
    with pytest.raises(ServerError, match="token"):
        Server(settings, engines)
    engines.executor.shutdown()


async def test_the_token_is_checked_on_everything_but_the_page_and_health(
    make_server: MakeServer,
) -> None:
    server = await make_server(token="s3cret-token")
    for path in ("/", "/healthz"):
        assert (await http_get(server.url + path))[0] == 200
    assert (await http_get(server.url + "/personas"))[0] == 401
    assert (await http_get(server.url + "/metrics?token=wrong"))[0] == 401
    assert (await http_get(server.url + "/metrics?token=s3cret-token"))[0] == 200
    bearer = {"Authorization": "Bearer s3cret-token"}
    assert (await http_get(server.url + "/personas", bearer))[0] == 200
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(server, "/pcm"))
    assert refused.value.response.status_code == 401
    async with connect(ws_url(server, "/pcm?token=s3cret-token")) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        assert (await events_until(ws, "session"))[-1]["type"] == "session"


async def test_websocket_origins_and_hosts_are_checked(make_server: MakeServer) -> None:
    server = await make_server(allowed_origins=["https://app.example"])
    own = f"http://127.0.0.1:{server.port}"
    for origin, ok in [
        ("http://evil.example", False),
        (f"http://localhost:{server.port}", False),  # not the Host the request names
        (own, True),
        ("https://app.example", True),
    ]:
        try:
            async with connect(ws_url(server, "/pcm"), origin=origin) as ws:  # type: ignore[arg-type]
                await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
                await events_until(ws, "session")
            assert ok, origin
        except InvalidStatus as exc:
            assert not ok and exc.response.status_code == 403, origin
    # DNS rebinding: a foreign name that resolves to 127.0.0.1 is not this server's name
    status, _, body = await http_get(server.url + "/personas", {"Host": "evil.example"})
    assert status == 403 and b"Host" in body


# --- sessions ------------------------------------------------------------------------------


async def talk_pcm(
    ws: ClientConnection, rate: int, pcm: np.ndarray, silence_s: float = 1.5
) -> None:
    """Send 16 kHz `pcm` then silence, as `rate` PCM in 20 ms messages, faster than real time
    (the turn logic counts silence in samples, not in wall time)."""
    audio = resample(np.concatenate([pcm, silence_16k(silence_s)]), 16000, rate)
    step = rate // 50
    for i in range(0, len(audio), step):
        await ws.send(audio[i : i + step].astype("<i2").tobytes())
        await asyncio.sleep(0.002)


async def greeting_over(ws: ClientConnection) -> list[dict[str, Any]]:
    """The events until the end of the persona's greeting (its final transcript; every
    built-in persona has one), its audio dropped."""
    events = []
    async for raw in ws:
        if isinstance(raw, str):
            events.append(e := json.loads(raw))
            if e["type"] == "transcript" and e["role"] == "assistant" and e["final"]:
                return events
    raise AssertionError("the session ended before its greeting")


async def converse_pcm(
    ws: ClientConnection, rate: int, *, greeted: bool = False
) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Once the greeting is over, ask the question, keep the microphone open (silence), and
    collect the reply's audio and events until the assistant's final transcript."""
    if not greeted:
        await greeting_over(ws)
    await talk_pcm(ws, rate, speech_16k(QUESTION))
    audio: list[bytes] = []
    events: list[dict[str, Any]] = []

    async def read() -> None:
        async for raw in ws:
            if isinstance(raw, bytes):
                audio.append(raw)
            else:
                e = json.loads(raw)
                events.append(e)
                if e["type"] == "transcript" and e["role"] == "assistant" and e["final"]:
                    return

    async def keep_talking() -> None:  # a microphone sends silence while it listens
        while True:
            await ws.send(bytes(rate // 50 * 2))
            await asyncio.sleep(0.02)

    silence = asyncio.ensure_future(keep_talking())
    try:
        await asyncio.wait_for(read(), 15)
    finally:
        silence.cancel()
    return audio, events


async def test_pcm_round_trip_at_the_clients_rate(make_server: MakeServer) -> None:
    server = await make_server()
    async with connect(ws_url(server, "/pcm")) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 24000, "persona": "tutor"}))
        hello = (await events_until(ws, "session"))[-1]
        assert hello["persona"]["id"] == "tutor" and hello["sample_rate"] == 24000
        audio, events = await converse_pcm(ws, 24000)
        await ws.send(json.dumps({"type": "bye"}))
    kinds = [e["type"] for e in events]
    assert {"transcript", "state", "turn_metrics"} <= set(kinds)
    user = [e for e in events if e["type"] == "transcript" and e["role"] == "user" and e["final"]]
    assert user[0]["text"] == "what is the capital of france"
    assert events[-1] == {
        "type": "transcript",
        "role": "assistant",
        "text": "Paris is the capital.",
        "final": True,
        "turn": 1,
    }
    assert {len(a) for a in audio} == {960}  # 20 ms at 24 kHz, 16-bit
    reply = np.frombuffer(b"".join(audio), "<i2")
    assert len(reply) >= 24000 * 0.4 * 0.9  # FakeTTS: 4 words x 100 ms
    assert dbfs(reply[reply != 0]) > -20
    metrics = next(e for e in events if e["type"] == "turn_metrics")
    assert metrics["voice_to_voice_ms"] >= metrics["endpoint_ms"] > 0


async def test_the_session_limit_answers_busy(make_server: MakeServer) -> None:
    server = await make_server(max_sessions=1)
    async with connect(ws_url(server, "/pcm")) as first:
        await first.send(json.dumps({"type": "start", "sample_rate": 16000}))
        await events_until(first, "session")
        async with connect(ws_url(server, "/ws")) as second:
            error = (await events_until(second, "error"))[-1]
            assert error["code"] == "busy" and error["fatal"] is True
            with pytest.raises(ConnectionClosed) as closed:
                await second.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    _, _, body = await http_get(server.url + "/metrics")
    assert b'voice_agent_connections_rejected_total{reason="busy"} 1.0' in body


async def test_a_caller_who_calls_again_at_the_limit_gets_the_freed_slot(
    make_server: MakeServer,
) -> None:
    """At the limit, a new caller waits (up to ADMIT_WAIT_S) for a session that is ending."""
    server = await make_server(max_sessions=1)
    start = json.dumps({"type": "start", "sample_rate": 16000})
    first = await connect(ws_url(server, "/pcm"))
    await first.send(start)
    await events_until(first, "session")
    async with connect(ws_url(server, "/pcm")) as second:  # before the first hangs up
        await second.send(start)
        await asyncio.sleep(0.2)
        await first.close()
        assert (await events_until(second, "session"))[-1]["type"] == "session"


@pytest.mark.parametrize(
    ("path", "messages", "code"),
    [
        ("/ws", ["not json at all"], "bad_message"),
        ("/ws", [b"\x00\xff\x13binary garbage"], "bad_message"),
        ("/ws", ['{"type": "answer", "sdp": "x"}'], "bad_message"),
        ("/ws", ['{"type": "offer"}'], "bad_message"),
        ("/ws", ['{"type": "offer", "sdp": 42}'], "bad_message"),
        ("/ws", ['{"type": "offer", "sdp": "v=0\\r\\ngarbage"}'], "bad_offer"),
        ("/ws", ['{"type": "offer", "sdp": "x", "persona": "../../etc/passwd"}'], "bad_message"),
        ("/ws", ['["offer"]'], "bad_message"),
        ("/pcm", ['{"type": "start", "sample_rate": 3}'], "bad_message"),
        (
            "/pcm",
            ['{"type": "start", "sample_rate": 16000, "persona": "nobody"}'],
            "unknown_persona",
        ),
        ("/pcm", ['{"type": "start", "sample_rate": 16000}', b"\x01\x02\x03"], "bad_message"),
        ("/pcm", ['{"type": "start", "sample_rate": 16000}', '{"type": "start"}'], "bad_message"),
        ("/pcm", ['{"type": "start", "sample_rate": 16000}', "{{{"], "bad_message"),
    ],
)
async def test_a_malformed_message_ends_only_its_own_session(
    make_server: MakeServer, path: str, messages: list[str | bytes], code: str
) -> None:
    server = await make_server()
    async with connect(ws_url(server, "/pcm")) as bystander:
        await bystander.send(json.dumps({"type": "start", "sample_rate": 16000}))
        await events_until(bystander, "session")
        async with connect(ws_url(server, path)) as ws:
            for message in messages:
                await ws.send(message)
            error = (await events_until(ws, "error"))[-1]
            assert error["code"] == code and error["fatal"] is True, error
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
        await bystander.send(bytes(640))  # the other session goes on
        assert len(server.sessions) == 1
    status, _, _ = await http_get(server.url + "/healthz")
    assert status == 200


async def test_a_message_over_the_size_bound_closes_its_socket(make_server: MakeServer) -> None:
    server = await make_server(max_message_bytes=4096)
    async with connect(ws_url(server, "/pcm")) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        await events_until(ws, "session")
        await ws.send(bytes(8192))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    for _ in range(100):
        if not server.sessions:
            break
        await asyncio.sleep(0.02)
    assert not server.sessions


def peer_connections() -> int:
    gc.collect()
    return sum(isinstance(o, RTCPeerConnection) for o in gc.get_objects())


async def test_fifty_sessions_opened_and_closed_leave_nothing_behind(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    tasks = len(asyncio.all_tasks())
    threads = threading.active_count()
    fds = len(os.listdir("/proc/self/fd"))
    url = ws_url(server, "")
    for i in range(25):  # WebRTC: a real peer each time, left in three different ways
        caller = await WebRTCCaller.connect(url)
        await caller.wait_for("session")
        if i % 3 == 0:
            await caller.ws.send(json.dumps({"type": "bye"}))
        elif i % 3 == 1:
            await caller.pc.close()  # the peer goes away; the socket stays until close()
        await caller.close()
    del caller  # the test's own last peer: every other one must be gone
    for i in range(25):  # /pcm, with a bye or a bare close
        async with connect(url + "/pcm") as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            await events_until(ws, "session")
            await ws.send(bytes(640 * 5))
            if i % 2:
                await ws.send(json.dumps({"type": "bye"}))
    for _ in range(250):
        if not server.sessions and len(asyncio.all_tasks()) <= tasks:
            break
        await asyncio.sleep(0.02)
    assert not server.sessions
    assert len(asyncio.all_tasks()) <= tasks, asyncio.all_tasks()
    assert peer_connections() == 0
    for _ in range(100):  # the engine pool's threads stay; nothing else may
        if threading.active_count() <= threads + 2:
            break
        await asyncio.sleep(0.05)
    assert threading.active_count() <= threads + 2, threading.enumerate()
    assert len(os.listdir("/proc/self/fd")) <= fds + 4
    _, _, body = await http_get(server.url + "/metrics")
    assert b'voice_agent_sessions_total{transport="webrtc"} 25.0' in body
    assert b'voice_agent_sessions_total{transport="pcm"} 25.0' in body
    assert b"voice_agent_sessions_active 0.0" in body


async def test_a_webrtc_caller_hears_a_reply_with_fake_engines(make_server: MakeServer) -> None:
    server = await make_server()
    async with await WebRTCCaller.connect(ws_url(server, ""), persona="sprinter") as caller:
        hello = await caller.wait_for("session")
        assert hello["persona"]["id"] == "sprinter"
        assert (await caller.greeted()) is not None
        said = caller.say(speech_16k(QUESTION), 16000, "question")
        final = await caller.wait_for(
            "transcript", lambda e: e["role"] == "assistant" and e["final"] and e["turn"] == 1
        )
        assert final["text"] == "Paris is the capital."
        assert said.done.is_set() and caller.first_audible(said.ended) is not None
        for _ in range(100):  # the last frames are still on their way (jitter buffers)
            if caller.audible_ms() >= 360:
                break
            await asyncio.sleep(0.02)
        assert caller.audible_ms() >= 360  # FakeTTS: 4 words x 100 ms


async def test_a_pcm_caller_talking_in_real_time_hears_a_reply(make_server: MakeServer) -> None:
    server = await make_server()
    async with await PcmCaller.connect(ws_url(server, ""), rate=24000) as caller:
        await caller.greeted()
        said = caller.say(speech_16k(QUESTION), 16000, "question")
        final = await caller.wait_for(
            "transcript", lambda e: e["role"] == "assistant" and e["final"] and e["turn"] == 1
        )
        assert final["text"] == "Paris is the capital."
        heard_at = caller.first_audible(said.started)
        assert heard_at is not None and heard_at > said.ended
        assert caller.audible_ms() >= 380


QUIET = """\
id: quiet
name: Quinn
description: Re-prompts a silent caller once, then hangs up.
system_prompt: Be brief.
greeting: Hello, Quinn here.
idle:
  after_s: 1
  reprompts:
    - Are you still there?
  max_reprompts: 1
  goodbye: Goodbye for now.
"""


async def test_a_silent_pcm_caller_is_reprompted_then_the_session_ends_idle(
    store: ModelStore, tmp_path: Any
) -> None:
    (tmp_path / "quiet.yaml").write_text(QUIET)
    settings = make_settings()
    server = Server(settings, fake_engines(store, settings), PersonaStore([tmp_path]))
    await server.start()
    try:
        await _silent_caller(server)
    finally:
        await server.stop(0)
        server.engines.executor.shutdown()


async def _silent_caller(server: Server) -> None:
    async with await PcmCaller.connect(ws_url(server, ""), persona="quiet") as caller:
        assert (await caller.greeted()) is not None  # then the caller says nothing at all
        ended = await caller.wait_for("session_ended", within_s=15)
    assert ended == {"type": "session_ended", "reason": "idle"}
    said = [
        (e["text"], e["turn"])
        for e in caller.events
        if e["type"] == "transcript" and e["role"] == "assistant" and e["final"]
    ]
    assert said == [("Hello, Quinn here.", 0), ("Are you still there?", 0), ("Goodbye for now.", 0)]
    states = [e["state"] for e in caller.events if e["type"] == "state"]
    assert states == ["speaking", "listening"] * 3
    assert caller.audible_ms() >= 1000  # FakeTTS: 10 words x 100 ms, all played before the end
    for _ in range(100):  # the session's end reaches the metrics as it closes
        if not server.sessions:
            break
        await asyncio.sleep(0.02)
    _, _, body = await http_get(server.url + "/metrics")
    assert b'voice_agent_sessions_ended_total{reason="idle"} 1.0' in body
    assert b"voice_agent_idle_reprompts_total 1.0" in body


# --- the real models -----------------------------------------------------------------------


@pytest.mark.slow
async def test_a_webrtc_conversation_with_the_real_models(
    store: ModelStore, real_engines: Engines
) -> None:
    settings = make_settings()
    server = Server(settings, real_engines)
    await server.start()
    try:
        async with await WebRTCCaller.connect(ws_url(server, "")) as caller:
            await caller.greeted()
            greeted = len(caller.events)
            said = caller.say(speech_16k(QUESTION), 16000, "question")
            user = await caller.wait_for(
                "transcript", lambda e: e["role"] == "user" and e["final"], within_s=30
            )
            # Words came through, not a given word: Whisper tiny hears "France" as "friend" in
            # about one run in eight over Opus (ASR accuracy is measured in test_asr_whisper).
            assert wer(QUESTION, user["text"]) <= 1 / 3, user["text"]
            reply = await caller.wait_for(
                "transcript",
                lambda e: e["role"] == "assistant" and e["final"],
                within_s=60,
                after=greeted,
            )
            assert reply["text"].strip()
            metrics = await caller.wait_for("turn_metrics")
            assert metrics["voice_to_voice_ms"] > 0
            heard_at = caller.first_audible(said.ended)
            assert heard_at is not None and caller.audible_ms() > 300
    finally:
        await server.stop(0)


async def test_stop_lets_the_reply_in_progress_finish_then_ends_the_session(
    make_server: MakeServer,
) -> None:
    server = await make_server()
    url = ws_url(server, "/pcm")
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
        await events_until(ws, "session")
        await greeting_over(ws)
        await talk_pcm(ws, 16000, speech_16k(QUESTION))
        audio: list[bytes] = []
        events: list[dict[str, Any]] = []
        stopping: asyncio.Future[None] | None = None

        async def read() -> None:
            nonlocal stopping
            async for raw in ws:
                if isinstance(raw, bytes):
                    audio.append(raw)
                    if stopping is None:  # the reply has begun: shut the server down
                        stopping = asyncio.ensure_future(server.stop(grace_s=10))
                else:
                    events.append(json.loads(raw))

        async def keep_talking() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await ws.send(bytes(640))
                    await asyncio.sleep(0.02)

        mic = asyncio.ensure_future(keep_talking())
        try:
            await asyncio.wait_for(read(), 15)  # ends when the server closes the socket
        finally:
            mic.cancel()
        assert stopping is not None
        await asyncio.wait_for(stopping, 5)
    assert len(audio) == 20  # FakeTTS: "Paris is the capital." = 4 words x 100 ms, all of it
    final = [e for e in events if e["type"] == "transcript" and e["role"] == "assistant"]
    assert final[-1]["final"] and final[-1]["text"] == "Paris is the capital."
    assert not server.sessions
    with pytest.raises(OSError):
        await connect(url)


async def test_operators_see_every_sessions_events_and_the_last_turns(
    make_server: MakeServer, tmp_path: Any
) -> None:
    log = tmp_path / "logs" / "turns.jsonl"
    server = await make_server(metrics={"jsonl_path": str(log)})
    async with connect(ws_url(server, "/events")) as operator:
        hello = json.loads(await operator.recv())
        boot = hello.pop("boot")
        assert hello == {"type": "hello", "max_sessions": 16, "sessions": [], "turns": []}
        async with connect(ws_url(server, "/pcm")) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000}))
            session = (await events_until(ws, "session"))[-1]["id"]
            seen = await events_until(operator, "session_started")
            assert seen[-1] == {
                "type": "session_started",
                "session": session,
                "persona": {"id": "concierge", "name": "Ada"},
                "transport": "pcm",
            }
            await greeting_over(ws)
            async with connect(ws_url(server, "/events")) as second:
                now = json.loads(await second.recv())
                assert now["boot"] == boot
                assert [(s["session"], s["state"]) for s in now["sessions"]] == [
                    (session, "listening")
                ]
            await converse_pcm(ws, 16000, greeted=True)
        seen = await events_until(operator, "session_ended")
    kinds = {m["type"] for m in seen}
    assert {"state", "transcript", "turn_metrics", "session_ended"} <= kinds
    assert all(m["session"] == session for m in seen)
    metrics = next(m for m in seen if m["type"] == "turn_metrics")
    assert metrics["turn"] == 1 and metrics["voice_to_voice_ms"] > 0
    async with connect(ws_url(server, "/events")) as late:
        hello = json.loads(await late.recv())
        assert hello["sessions"] == [] and [t["turn"] for t in hello["turns"]] == [1]
    _, _, body = await http_get(server.url + "/metrics")
    assert b'voice_agent_turn_latency_seconds_count{stage="voice_to_voice"} 1.0' in body
    for _ in range(100):  # the log is written in a worker thread
        if log.exists() and log.read_text():
            break
        await asyncio.sleep(0.02)
    [record] = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["session"] == session and record["turn"] == 1
    assert record["interrupted"] is False and record["played_ms"] >= 380
    assert record["voice_to_voice_ms"] == metrics["voice_to_voice_ms"]


async def test_stop_ends_the_dashboards_feeds_too(make_server: MakeServer) -> None:
    server = await make_server()
    async with connect(ws_url(server, "/events")) as operator:
        assert json.loads(await operator.recv())["type"] == "hello"
        await asyncio.wait_for(server.stop(grace_s=1), 5)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(operator.recv(), 5)
