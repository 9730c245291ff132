"""`voice-agent bench conversation` against a server whose engines are fakes with known timings:
the figures it reads off the audio must agree with what the server did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakes import FakeASR, FakeLLM, FakeTTS
from tests.servers import MakeServer, make_settings, ws_url
from voice_agent.audio.vad import vad_factory
from voice_agent.bench import capacity, conversation
from voice_agent.bench.figures import Figure, NoPlot, table
from voice_agent.engines import Engines
from voice_agent.executor import EngineExecutor
from voice_agent.modelfiles import ModelStore

pytestmark = pytest.mark.slow  # real time: a few turns of simulated conversation

LONG_REPLY = " ".join(["word"] * 40) + "."  # FakeTTS: 100 ms a word, 4 s


def engines(store: ModelStore) -> Engines:
    settings = make_settings()
    return Engines(
        asr=FakeASR(["please tell me more about that"] * 100),
        llm=FakeLLM([LONG_REPLY], repeat_last=True),
        tts={"piper": FakeTTS()},
        executor=EngineExecutor(workers=2),
        vad=vad_factory(settings.vad, store),
    )


def by_metric(figures: list[Figure]) -> dict[str, Figure]:
    return {f.metric: f for f in figures}


async def test_a_patient_persona_is_measured_turn_by_turn(
    make_server: MakeServer, store: ModelStore
) -> None:
    server = await make_server(engines(store))
    figures, details = await conversation.run(
        make_settings(),
        url=ws_url(server, ""),
        sessions=2,
        turns=5,
        transport="pcm",
        argv=[],
        progress=lambda _: None,
        persona="tutor",  # 900 ms of silence ends a turn: the 600 ms pause must not
    )
    f = by_metric(figures)
    assert details["failures"] == [] and details["missed"] == []
    client, server_says = f["voice-to-voice, at the client"], f["voice-to-voice, server's report"]
    assert len(client.samples) == len(server_says.samples) == 4  # two questions per user
    # the tutor waits 900 ms of silence; the fakes answer at once; /pcm adds next to nothing.
    # The VAD may hear the speech end up to a frame (32 ms) before the client's -40 dB mark of
    # its last audible sample (measured: 899.5 ms once).
    assert all(900 - 40 <= ms <= 1500 for ms in client.samples), client.samples
    assert abs(client.median - server_says.median) < 120
    assert f["false cut-offs"].samples == [0.0, 0.0]
    barge = f["barge-in: onset -> reply 20 dB down"]
    assert len(barge.samples) == 2 and all(0 < ms < 1000 for ms in barge.samples)
    assert len(f["backchannels kept"].samples) == 2
    assert "client CPU" in f and "server CPU" not in f  # it did not start this server


async def test_a_pause_longer_than_the_endpoint_is_a_false_cut_off(
    make_server: MakeServer, store: ModelStore, tmp_path: Path
) -> None:
    server = await make_server(engines(store))
    figures, _ = await conversation.run(
        make_settings(),
        url=ws_url(server, ""),
        sessions=1,
        turns=2,  # a question, then the sentence with a pause
        transport="webrtc",
        argv=[],
        progress=lambda _: None,
        persona="sprinter",  # 350 ms of silence ends a turn
    )
    f = by_metric(figures)
    assert f["false cut-offs"].samples == [1.0]
    assert f["false cut-offs"].median == 1.0 and "share ≤ 0.05 MISSED" in table(figures)
    assert len(f["voice-to-voice, at the client"].samples) == 1
    png = tmp_path / "plot.png"
    conversation.plot(figures, "test", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = [fig.as_json() for fig in figures]
    assert json.loads(json.dumps(record))[0]["samples"]


async def test_capacity_runs_each_count_at_each_pace_and_finds_the_knee(
    make_server: MakeServer, store: ModelStore, tmp_path: Path
) -> None:
    server = await make_server(engines(store))
    figures, details = await capacity.run(
        make_settings(),
        url=ws_url(server, ""),
        counts=[1, 2],
        turns=1,  # one question each
        transport="pcm",
        argv=[],
        progress=lambda _: None,
        persona="tutor",
        paces=["human", "back-to-back"],
    )
    v2v = [f for f in figures if f.metric == "voice-to-voice, at the client"]
    assert [f.engine for f in v2v] == [
        "1 x pcm, human",
        "2 x pcm, human",
        "1 x pcm, back-to-back",
        "2 x pcm, back-to-back",
    ]
    assert [len(f.samples) for f in v2v] == [1, 2, 1, 2]
    assert all(f.p95_target == capacity.KNEE_P95_MS for f in v2v)
    # the fakes answer at once after the tutor's 900 ms: both counts are under 1.5 s
    assert details["knee_sessions"] == {"human": 2}
    assert [(r["pace"], r["sessions"]) for r in details["runs"]] == [
        ("human", 1),
        ("human", 2),
        ("back-to-back", 1),
        ("back-to-back", 2),
    ]
    capacity.plot(figures, "capacity", tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 10_000
    lost = [Figure(f.engine, f.metric, f.unit) for f in figures]  # every session lost
    with pytest.raises(NoPlot, match="no voice-to-voice"):
        capacity.plot(lost, "capacity", tmp_path / "lost.png")
    with pytest.raises(NoPlot, match="no latency"):
        conversation.plot(lost, "conversation", tmp_path / "lost.png")
