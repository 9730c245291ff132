"""`voice-agent bench soak` and the resource gauges it reads from `/metrics`: a hundred sessions
over every transport and every way of leaving, against a server with fake engines, and then
every count must be back where it was."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.servers import MakeServer, fake_engines, make_settings, ws_url
from voice_agent import cli
from voice_agent.bench import soak
from voice_agent.bench.caller import WebRTCCaller
from voice_agent.modelfiles import ModelStore
from voice_agent.server import Server
from voice_agent.transports.webrtc import live_peer_connections

LONG_REPLY = " ".join(["word"] * 20) + "."
"""FakeTTS: 100 ms a word, so 2 s of reply: long enough to talk over."""


async def test_metrics_has_the_process_gauges_read_when_scraped(make_server: MakeServer) -> None:
    server = await make_server()
    url = ws_url(server, "")
    idle = await soak.scrape(url)
    assert set(idle) == set(soak.GAUGES), idle
    assert idle["sessions"] == 0 and idle["peer_connections"] == 0
    assert 2 <= idle["tasks"] < 1000  # the test itself and the scrape's connection, at least
    assert 1 <= idle["threads"] < 200 and 0 <= idle["pool_threads"] <= idle["threads"]
    assert 3 <= idle["fds"] < 10_000
    assert 20e6 < idle["rss_bytes"] < 64e9
    caller = await WebRTCCaller.connect(url)
    try:
        await caller.wait_for("session")
        busy = await soak.scrape(url)
        assert busy["sessions"] == 1 and busy["peer_connections"] == 1
        assert busy["tasks"] > idle["tasks"] and busy["fds"] > idle["fds"]
    finally:
        await caller.close()
    for _ in range(100):
        if live_peer_connections() == 0 and not server.sessions:
            break
        await asyncio.sleep(0.05)
    after = await soak.scrape(url)
    assert after["sessions"] == 0 and after["peer_connections"] == 0


def judged(after_tasks: int) -> soak.SoakReport:
    """A report of a soak whose tasks went from 10 to 60 and then to `after_tasks`."""
    report = soak.SoakReport(workers=2, duration_s=1)
    report.started[("webrtc", "idle")] = 3
    base = {"sessions": 0, "tasks": 10, "threads": 4, "fds": 20, "peer_connections": 0}
    report.series = [
        {"t": 0.0, "phase": "baseline", **base, "rss_bytes": 100e6},
        {"t": 1.0, "phase": "load", **base, "tasks": 60, "peer_connections": 2, "rss_bytes": 150e6},
    ]
    report.judge({**base, "rss_bytes": 100e6}, {**base, "tasks": after_tasks, "rss_bytes": 120e6})
    return report


def test_a_count_that_stays_up_is_reported_as_not_returned() -> None:
    report = judged(after_tasks=11)  # one task left behind
    assert report.verdicts["tasks"] == soak.Verdict(10, 60, 11, 0)
    assert not report.verdicts["tasks"].returned and report.verdicts["fds"].returned
    assert report.verdicts["peer_connections"].peak == 2
    assert not report.ok
    record = json.loads(json.dumps(report.as_json()))
    assert record["rss_growth_mb"] == 20.0 and record["gauges"]["tasks"]["returned"] is False
    table = report.table()
    assert "NO" in table and "growth +20.0 MB" in table


def test_threads_may_stay_up_by_the_pool_workers_started_meanwhile_and_no_more() -> None:
    base = {"sessions": 0, "tasks": 5, "threads": 4, "pool_threads": 3}
    grown = {**base, "threads": 7, "pool_threads": 6}  # three more pool workers, kept
    assert soak.allowed("threads", base, grown) == 3 and soak.allowed("tasks", base, grown) == 0
    kept = soak.SoakReport(workers=1, duration_s=1, series=[base, grown])
    kept.judge(base, grown)
    assert kept.verdicts["threads"].returned
    assert kept.pool_threads == (3.0, 6.0)
    leaked = soak.SoakReport(workers=1, duration_s=1, series=[base])
    leaked.judge(base, {**grown, "threads": 8})  # one thread outside the pools stayed
    assert not leaked.verdicts["threads"].returned and not leaked.ok


def test_a_failed_session_fails_the_soak_even_when_every_count_came_back() -> None:
    assert judged(after_tasks=10).ok
    report = judged(after_tasks=10)
    report.fail("pcm", "turn", TimeoutError("no reply audible within 60 s"))
    assert not report.ok and "pcm/turn: TimeoutError: no reply audible" in report.table()
    assert report.as_json()["failed_by_pair"] == {"pcm/turn": 1}


def test_bench_soak_refuses_a_duration_that_is_not_positive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["bench", "soak", "--duration", "0"]) == cli.EXIT_INPUT
    assert "--duration" in capsys.readouterr().err


@pytest.mark.slow  # about a minute of real-time sessions
async def test_a_hundred_sessions_over_every_transport_leave_the_server_at_its_baseline(
    store: ModelStore,
) -> None:
    settings = make_settings()
    server = Server(settings, fake_engines(store, settings, replies=500, reply=LONG_REPLY))
    await server.start()
    try:
        report = await soak.run(
            settings,
            url=ws_url(server, ""),
            sessions=8,
            duration_s=240,
            limit=108,  # six rounds of every (transport, behaviour) pair
            argv=[],
            progress=lambda _: None,
            behaviours=("idle", "turn", "idle", "barge-in", "idle", "abrupt"),
            idle_s=0.3,
            every_s=0.5,
        )
    finally:  # bounded: a session that never finishes closing would hold stop() for ever
        try:
            await asyncio.wait_for(server.stop(0), 30)
            stopped = True
        except TimeoutError:
            stopped = False
        server.engines.executor.shutdown()
    print(report.table())
    assert report.failures == [] and report.sessions == 108, report.table()
    assert set(report.started) == {(t, b) for t in soak.TRANSPORTS for b in soak.BEHAVIOURS}
    v = report.verdicts
    assert set(v) == set(soak.COUNTS)
    assert v["sessions"].peak >= 4 and v["peer_connections"].peak >= 1  # it really was loaded
    assert v["tasks"].peak > v["tasks"].baseline + 20
    assert all(x.returned for x in v.values()), report.table()
    assert report.ok and report.settled_s is not None and report.rss_mb is not None
    assert stopped, "the server did not stop within 30 s"
