"""The operators' dashboard (`voice-agent dashboard`): its model fed with `/events` messages,
the app driven by Textual pilots against a fake `/events` server (which goes away and comes
back), and the main screen as text against tests/snapshots/dashboard_main.txt.

The screen "snapshot" is the text of `App.export_screenshot()`'s SVG, not pytest-textual-snapshot:
that plugin pins syrupy 4.8, which requires pytest < 9. Set VOICE_AGENT_UPDATE_SNAPSHOTS=1 to
rewrite the snapshot after a deliberate change of the screen (and read the diff).
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console, RenderableType
from textual.pilot import Pilot
from textual.widgets import DataTable, Sparkline, Static
from websockets.asyncio.server import Server, ServerConnection, serve

from tests.servers import MakeServer
from voice_agent.ui.dashboard import DashboardApp, run_dashboard
from voice_agent.ui.dashboard_client import Backoff, events_url, follow_events, shown_url
from voice_agent.ui.dashboard_model import (
    ENDED_KEPT,
    STAGES,
    TRANSCRIPT_LINES,
    TURNS_WINDOW,
    DashboardModel,
    percentile,
)
from voice_agent.ui.dashboard_views import status_text, waterfall

SNAPSHOT = Path(__file__).parent / "snapshots" / "dashboard_main.txt"
FAST = Backoff(first_s=0.05, cap_s=0.2)


# --- messages ----------------------------------------------------------------------------------


def hello(
    sessions: list[dict[str, Any]], turns: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"type": "hello", "max_sessions": 8, "sessions": sessions, "turns": turns or []}


def live(
    sid: str, name: str = "Ada", transport: str = "webrtc", ago: float = 0.0
) -> dict[str, Any]:
    persona = {"id": name.lower(), "name": name}
    return {"session": sid, "persona": persona, "transport": transport, "started_s_ago": ago}


def started(sid: str, name: str = "Ada", transport: str = "webrtc") -> dict[str, Any]:
    persona = {"id": name.lower(), "name": name}
    return {"type": "session_started", "session": sid, "persona": persona, "transport": transport}


def said(sid: str, role: str, text: str, final: bool, turn: int) -> dict[str, Any]:
    return {
        "type": "transcript",
        "session": sid,
        "role": role,
        "text": text,
        "final": final,
        "turn": turn,
    }


def metrics(sid: str, turn: int, v2v: float | None = 600.0, **ms: float | None) -> dict[str, Any]:
    figures: dict[str, float | None] = {
        "endpoint_ms": 200.0,
        "asr_ms": 380.0,
        "llm_first_token_ms": 450.0,
        "first_clause_ms": 480.0,
        "tts_first_chunk_ms": 530.0,
    }
    figures.update(ms)
    return {
        "type": "turn_metrics",
        "session": sid,
        "turn": turn,
        **figures,
        "voice_to_voice_ms": v2v,
        "reason": "finished turn",
        "speech_ms": 1500.0,
    }


def error(sid: str, code: str, message: str, fatal: bool = False) -> dict[str, Any]:
    return {"type": "error", "session": sid, "code": code, "message": message, "fatal": fatal}


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fed(*messages: dict[str, Any], clock: Clock | None = None) -> DashboardModel:
    model = DashboardModel(clock=clock or Clock())
    for message in messages:
        model.apply(message)
    return model


def lines(model: DashboardModel, sid: str) -> list[tuple[str, str, bool, bool]]:
    return [(ln.role, ln.text, ln.final, ln.interrupted) for ln in model.sessions[sid].lines]


# --- the model ---------------------------------------------------------------------------------


def test_percentile_is_numpys_linear_definition_on_known_lists() -> None:
    values = [float(v) for v in range(1, 101)]
    random.Random(7).shuffle(values)
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([300.0], 95) == 300.0
    assert percentile([], 50) is None
    odd = [120.0, 80.0, 400.0, 95.0, 210.0]
    for q in (0, 50, 95, 100):
        assert percentile(odd, q) == pytest.approx(float(np.percentile(odd, q)))


def test_stats_cover_the_last_hundred_turns_and_leave_nulls_out() -> None:
    model = fed(started("s1"))
    for turn in range(1, 151):  # turns 51..150 stay: v2v 510..1500
        model.apply(metrics("s1", turn, v2v=turn * 10.0, asr_ms=None if turn % 2 else 300.0))
    assert len(model.turns) == TURNS_WINDOW
    stats = model.stats()
    v2v = stats["voice_to_voice_ms"]
    assert v2v.p50 == pytest.approx(1005.0) and v2v.p95 == pytest.approx(1450.5)
    assert v2v.n == 100
    assert stats["asr_ms"].n == 50 and stats["asr_ms"].p50 == 300.0
    assert model.voice_to_voice()[0] == 510.0 and model.voice_to_voice()[-1] == 1500.0
    assert model.sessions["s1"].turns == 150


def test_user_partials_are_replaced_in_place_by_their_final() -> None:
    model = fed(
        started("s1"),
        said("s1", "user", "what is", False, 1),
        said("s1", "user", "what is the capital", False, 1),
        said("s1", "user", "what is the capital of France", True, 1),
        said("s1", "user", "and Spain", False, 1),  # a pause in the turn: a second stretch
        said("s1", "user", "and Spain?", True, 1),
    )
    assert lines(model, "s1") == [
        ("user", "what is the capital of France", True, False),
        ("user", "and Spain?", True, False),
    ]


def test_the_assistant_line_grows_then_ends_as_what_was_heard() -> None:
    model = fed(
        started("s1"),
        said("s1", "assistant", "Paris is", False, 1),
        said("s1", "assistant", "Paris is the capital.", False, 1),
        said("s1", "assistant", "Madrid too.", False, 1),  # not a continuation: next words
        said("s1", "assistant", "Paris is the capital. Madrid too.", True, 1),
        said("s1", "assistant", "Next one", False, 2),
    )
    assert lines(model, "s1") == [
        ("assistant", "Paris is the capital. Madrid too.", True, False),
        ("assistant", "Next one", False, False),
    ]


def test_an_interruption_marks_the_reply_and_keeps_what_was_heard() -> None:
    model = fed(
        started("s1"),
        said("s1", "assistant", "Paris is the capital of", False, 3),
        said("s1", "user", "wait", False, 4),
        {"type": "interrupted", "session": "s1", "heard": "Paris is", "played_ms": 640},
        said("s1", "assistant", "Paris is the capital of France", False, 3),  # late: ignored
        said("s1", "assistant", "Paris is", True, 3),
        # interrupted before any of the reply was shown: the line starts with the interruption
        said("s1", "user", "wait", True, 4),
        {"type": "interrupted", "session": "s1", "heard": "", "played_ms": 0},
        said("s1", "assistant", "", True, 5),
    )
    assert lines(model, "s1") == [
        ("assistant", "Paris is", True, True),
        ("user", "wait", True, False),
        ("assistant", "", True, True),
    ]
    assert model.interruptions == 2 and model.sessions["s1"].interruptions == 2


def test_transcripts_are_bounded_per_session() -> None:
    model = fed(started("s1"))
    for turn in range(TRANSCRIPT_LINES + 50):
        model.apply(said("s1", "user", f"line {turn}", True, turn))
    kept = model.sessions["s1"].lines
    assert len(kept) == TRANSCRIPT_LINES and kept[-1].text == f"line {TRANSCRIPT_LINES + 49}"


def test_sessions_start_change_state_and_end() -> None:
    clock = Clock()
    model = fed(started("s1", "Ada", "webrtc"), clock=clock)
    clock.now += 30
    model.apply(started("s2", "Captain", "pcm"))
    model.apply({"type": "state", "session": "s2", "state": "thinking"})
    assert [s.id for s in model.live_sessions] == ["s1", "s2"]
    assert model.most_recent() is model.sessions["s2"]
    assert (model.sessions["s2"].persona, model.sessions["s2"].transport) == ("Captain", "pcm")
    assert model.sessions["s2"].state == "thinking"
    clock.now += 5
    model.apply({"type": "session_ended", "session": "s2"})
    model.apply({"type": "state", "session": "s2", "state": "listening"})  # a late one
    s2 = model.sessions["s2"]
    assert not s2.live and s2.state == "ended" and s2.ended_at == clock.now
    assert model.most_recent() is model.sessions["s1"]  # a live one before an ended one
    assert [s.id for s in model.ordered()] == ["s1", "s2"]
    for n in range(3, 3 + ENDED_KEPT + 5):
        model.apply(started(f"s{n}"))
        model.apply({"type": "session_ended", "session": f"s{n}"})
    ended = [s for s in model.sessions.values() if not s.live]
    assert len(ended) == ENDED_KEPT and "s2" not in model.sessions


def test_errors_and_lost_messages_are_counted() -> None:
    model = fed(
        started("s1"),
        error("s1", "engine", "tts"),
        error("s1", "internal", "boom", fatal=True),
        {"type": "lost", "count": 12},
    )
    assert model.errors == 2 and model.sessions["s1"].errors == 2
    assert model.last_error is not None
    assert (model.last_error.code, model.last_error.message, model.last_error.fatal) == (
        "internal",
        "boom",
        True,
    )
    assert model.lost == 12


def test_malformed_messages_are_ignored_never_raised() -> None:
    model = fed(started("s1"))
    bad_ones: list[dict[str, Any]] = [
        {"type": "nonsense"},
        {"type": "state"},
        {"type": "turn_metrics", "session": "s1", "turn": "three"},
        {"type": "hello", "sessions": "nope"},
        {"type": "transcript", "session": 5},
    ]
    for bad in bad_ones:
        model.apply(bad)
    assert model.ignored == 5
    assert model.turns == type(model.turns)(maxlen=TURNS_WINDOW)


def test_a_reconnect_hello_replaces_the_sessions_and_merges_the_turns() -> None:
    clock = Clock()
    model = fed(
        hello([live("s1", ago=60), live("s2", "Captain", "pcm", ago=10)], [metrics("s1", 1)]),
        said("s2", "user", "hello there", True, 1),
        metrics("s2", 1, v2v=700.0),
        {"type": "interrupted", "session": "s2", "heard": "", "played_ms": 0},
        clock=clock,
    )
    assert model.sessions["s1"].started_at == clock.now - 60
    clock.now += 20  # the link drops; meanwhile s1 ends, s3 starts, s2 and s3 take turns
    model.apply(
        hello(
            [live("s2", "Captain", "pcm", ago=30), live("s3", "Bob", ago=4)],
            [metrics("s1", 1), metrics("s2", 1, v2v=700.0), metrics("s2", 2), metrics("s3", 1)],
        )
    )
    assert [s.id for s in model.live_sessions] == ["s2", "s3"]
    assert model.sessions["s1"].state == "ended"  # kept, with what it had, as ended
    s2 = model.sessions["s2"]
    assert lines(model, "s2")[0] == ("user", "hello there", True, False)  # history kept
    assert (s2.turns, s2.interruptions) == (2, 1)
    assert [(t.session, t.turn) for t in model.turns] == [
        ("s1", 1),
        ("s2", 1),
        ("s2", 2),
        ("s3", 1),
    ]
    assert model.sessions["s3"].turns == 1


def test_a_hello_from_a_restarted_server_starts_reused_ids_afresh() -> None:
    clock = Clock()
    model = fed(hello([live("s1", ago=100)]), said("s1", "user", "old words", True, 1), clock=clock)
    clock.now += 10
    model.apply(hello([live("s1", "Bob", ago=2)]))  # a new s1: it started 2 s ago, not 110
    assert model.sessions["s1"].persona == "Bob" and not model.sessions["s1"].lines


# --- the views ---------------------------------------------------------------------------------


def test_the_waterfall_puts_every_stage_on_one_axis_and_shows_nulls_as_dashes() -> None:
    model = fed(metrics("s1", 4, v2v=900.0, first_clause_ms=None, llm_first_token_ms=150.0))
    turn = model.last_turn
    text = waterfall(turn, 60).plain.splitlines()
    assert text[0] == "s1 · turn 4 · spoke 1.5 s · finished turn"
    rows = dict(zip(STAGES, text[1:7], strict=True))
    assert rows["first_clause_ms"].rstrip().endswith("—")
    assert "█" not in rows["first_clause_ms"]
    assert rows["voice_to_voice_ms"].endswith("900 ms")
    assert text[7].rstrip().endswith("1000 ms")  # the axis: 900 ms rounds up to 1000
    assert all(len(row) == 60 for row in text[1:7])
    # asr (380) starts where endpoint (200) ended; the preemptive llm (150) starts at 0
    assert rows["asr_ms"][16:].startswith("─" * 7)
    assert rows["llm_first_token_ms"][16] == "█"
    assert waterfall(None, 60).plain.startswith("no turn yet")


def test_the_status_line_follows_the_connection() -> None:
    clock = Clock()
    model = fed(clock=clock)
    url = "ws://h:1/events"
    assert status_text(model, url, clock.now).plain.startswith("◌ connecting…")
    model.connection_down("connection refused", 2.0)
    clock.now += 0.5
    status = status_text(model, url, clock.now).plain
    assert status.startswith("○ server unreachable — retrying in 2s  ws://h:1/events")
    assert "connection refused" in status
    model.connection_trying()
    assert "retrying now" in status_text(model, url, clock.now).plain
    model.connection_up()
    model.apply(hello([live("s1")]))
    clock.now += 60
    status = status_text(model, url, clock.now).plain
    assert status == "● connected  ws://h:1/events · sessions 1/8"  # the first time: no "re"
    model.connection_down("the server closed the connection", 0.5)
    model.connection_trying()
    model.connection_up()
    clock.now += 75
    assert status_text(model, url, clock.now).plain.endswith("· reconnected 1m15s ago")
    model.connection_down("refused: at most 8 dashboards at once", 3.0)
    status = status_text(model, url, clock.now).plain
    assert status.startswith("○ refused by the server — retrying in 3s")
    assert "down 0s, showing what it had" in status


def test_events_url_adds_the_path_and_the_token() -> None:
    assert events_url("ws://127.0.0.1:8080") == "ws://127.0.0.1:8080/events"
    assert events_url("http://h:1/", "s e/cret") == "ws://h:1/events?token=s+e%2Fcret"
    assert events_url("wss://h/events?token=old", "new") == "wss://h/events?token=new"
    assert events_url("127.0.0.1:9000") == "ws://127.0.0.1:9000/events"
    assert shown_url("ws://h:1/events?token=secret") == "ws://h:1/events"
    for bad in ("ftp://h", "ws://", "ws://h:port"):
        with pytest.raises(ValueError):
            events_url(bad)


def test_run_dashboard_refuses_a_url_that_names_no_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_dashboard("ftp://nowhere") == 2
    assert "not a server URL" in capsys.readouterr().err


# --- the app, driven by pilots -----------------------------------------------------------------


def plain(renderable: RenderableType, width: int = 100) -> str:
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(renderable)
    console.file.close()
    return console.export_text()


def shown(app: DashboardApp, selector: str) -> str:
    widget = app.query_one(selector)
    if isinstance(widget, Static):
        return plain(widget.content)  # type: ignore[arg-type]
    return plain(widget.render())  # type: ignore[arg-type]


def table_rows(app: DashboardApp) -> list[list[str]]:
    table: DataTable[Any] = app.query_one("#sessions", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def wait_until(pilot: Pilot[Any], what: str, condition: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + 5.0
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


class FakeEvents:
    """A stand-in `/events` endpoint: each connection gets the next script, then stays open."""

    def __init__(self, scripts: list[list[dict[str, Any]]]) -> None:
        self.scripts: Iterator[list[dict[str, Any]]] = iter(scripts)
        self.paths: list[str] = []
        self.server: Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await serve(self._handler, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.paths.append(ws.request.path)
        for message in next(self.scripts):
            await ws.send(json.dumps(message))
        await ws.wait_closed()


async def test_the_app_follows_the_feed_and_survives_the_server_going_away() -> None:
    first = [
        hello([live("s1", ago=42)], [metrics("s1", 1, v2v=640.0)]),
        said("s1", "user", "what is the", False, 2),
        said("s1", "user", "what is the capital of France", True, 2),
        {"type": "state", "session": "s1", "state": "speaking"},
        metrics("s1", 2, v2v=820.0, first_clause_ms=None),
        said("s1", "assistant", "Paris is the capital", False, 2),
        {"type": "interrupted", "session": "s1", "heard": "Paris is", "played_ms": 500},
        said("s1", "assistant", "Paris is", True, 2),
        error("s1", "engine", "tts hiccup"),
    ]
    second = [hello([live("s1", ago=45), live("s2", "Captain", "pcm", ago=1)], [metrics("s1", 3)])]
    server = FakeEvents([first, second])
    await server.start()
    url = events_url(f"ws://127.0.0.1:{server.port}", "secret")
    app = DashboardApp(url, backoff=FAST)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, "the error", lambda: "tts hiccup" in shown(app, "#counts"))
        await wait_until(pilot, "the screen", lambda: "820 ms" in shown(app, "#waterfall"))
        assert server.paths == ["/events?token=secret"]
        status = shown(app, "#status")
        assert "connected" in status and f"127.0.0.1:{server.port}/events" in status
        assert "secret" not in status
        assert table_rows(app) == [["s1", "Ada", "webrtc", "speaking", "42s", "2", "1"]]
        fall = shown(app, "#waterfall")
        assert "s1 · turn 2 · spoke 1.5 s · finished turn" in fall
        bar = re.compile(r"│ voice to voice +─+█+.* 820 ms │")
        await wait_until(  # on screen too, not only in the widget
            pilot,
            "the bars on screen",
            lambda: bool(bar.search(screen_text(app.export_screenshot()))),
        )
        assert re.search(r"first clause +—", fall) and re.search(r"voice to voice .*820 ms", fall)
        stats = shown(app, "#stats")
        assert re.search(r"voice to voice +730 ms +811 ms +2", stats)  # p50/p95 of 640, 820
        assert app.query_one(Sparkline).data == [640.0, 820.0]
        text = shown(app, "#transcript")
        assert "what is the capital of France" in text and "what is the\n" not in text
        assert "Paris is (interrupted)" in text
        assert "interruptions 1" in shown(app, "#counts")

        await server.stop()
        await wait_until(pilot, "retrying", lambda: "server unreachable" in shown(app, "#status"))
        assert table_rows(app)[0][:4] == ["s1", "Ada", "webrtc", "speaking"]
        assert "Paris is (interrupted)" in shown(app, "#transcript")  # history kept

        await server.start()  # the same port again
        await wait_until(pilot, "the reconnect", lambda: "reconnected" in shown(app, "#status"))
        await wait_until(pilot, "the new session", lambda: len(table_rows(app)) == 2)
        assert [row[0] for row in table_rows(app)] == ["s1", "s2"]
        assert table_rows(app)[0][5] == "3"  # turns 1, 2 and now 3
        assert "turn 3" in shown(app, "#waterfall")
        assert "nothing said since" in shown(app, "#transcript")  # s2, the most recent
        await pilot.press("up")  # s1, whose history survived the reconnect
        assert "Paris is (interrupted)" in shown(app, "#transcript")
    await server.stop()


async def test_a_feed_refused_by_the_server_says_why_and_retries() -> None:
    async def refuse(ws: ServerConnection) -> None:
        why = {"type": "error", "code": "busy", "message": "at most 8 dashboards at once"}
        await ws.send(json.dumps({**why, "fatal": True}))
        await ws.close(1013, "busy")

    calls: list[tuple[str, Any]] = []
    async with serve(refuse, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        feed = asyncio.create_task(
            follow_events(
                f"ws://127.0.0.1:{port}/events",
                on_message=lambda m: calls.append(("message", m)),
                on_trying=lambda: calls.append(("trying", None)),
                on_connected=lambda: calls.append(("connected", None)),
                on_disconnected=lambda why, s: calls.append(("down", (why, s))),
                backoff=FAST,
            )
        )
        try:
            for _ in range(250):
                if sum(kind == "down" for kind, _ in calls) >= 3:
                    break
                await asyncio.sleep(0.02)
        finally:
            feed.cancel()
    downs = [arg for kind, arg in calls if kind == "down"]
    assert downs[:3] == [
        ("refused: at most 8 dashboards at once", 0.05),
        ("refused: at most 8 dashboards at once", 0.1),
        ("refused: at most 8 dashboards at once", 0.2),
    ]
    assert not [arg for kind, arg in calls if kind == "message"]  # not a session's error


async def test_tab_and_arrows_move_the_session_selection() -> None:
    model = fed(
        hello([live("s1", ago=9), live("s2", "Captain", "pcm", ago=5)]),
        said("s1", "user", "from the first", True, 1),
        said("s2", "user", "from the second", True, 1),
    )
    app = DashboardApp("ws://127.0.0.1:1/events", model=model, follow=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "from the second" in shown(app, "#transcript")  # the most recent by default
        assert "most recent" in str(app.query_one("#transcript-box").border_title)
        await pilot.press("tab")
        assert app.selected == "s1" and "from the first" in shown(app, "#transcript")
        assert app.query_one("#sessions", DataTable).cursor_row == 0
        await pilot.press("down")
        assert app.selected == "s2" and "from the second" in shown(app, "#transcript")
        await pilot.press("up")
        assert app.selected == "s1"
        await pilot.press("shift+tab")
        assert app.selected == "s2"
        model.apply(started("s3", "Bob"))
        model.apply(said("s3", "user", "from the third", True, 1))
        app.refresh_view()
        assert "from the second" in shown(app, "#transcript")  # a pick stays picked
        await pilot.press("escape")
        assert "most recent" in str(app.query_one("#transcript-box").border_title)
        assert "from the third" in shown(app, "#transcript")
        await pilot.press("q")
    assert app.return_code == 0


# --- the main screen, as text ------------------------------------------------------------------


def screen_text(svg: str) -> str:
    """The characters of an `export_screenshot()` SVG, line by line (Rich draws each run of
    text at x = column * 12.2, on a clip path named after its line)."""
    rows: dict[int, list[str]] = {}
    pattern = r'<text[^>]*x="([\d.]+)"[^>]*clip-path="url\(#[^)]*-line-(\d+)\)"[^>]*>(.*?)</text>'
    for m in re.finditer(pattern, svg):
        column, line, text = round(float(m.group(1)) / 12.2), int(m.group(2)), m.group(3)
        text = html.unescape(text).replace("\xa0", " ")
        row = rows.setdefault(line, [])
        row.extend(" " * (column + len(text) - len(row)))
        row[column : column + len(text)] = text
    return "\n".join("".join(rows.get(i, [])).rstrip() for i in range(max(rows) + 1))


def scripted_model() -> DashboardModel:
    clock = Clock()
    model = DashboardModel(clock=clock)
    model.connection_trying()
    model.connection_up()
    model.apply(
        hello(
            [live("s1", ago=125), live("s2", "Captain", "pcm", ago=12)],
            [metrics("s1", n, v2v=500.0 + 40 * n) for n in range(1, 9)],
        )
    )
    for message in [
        {"type": "state", "session": "s1", "state": "speaking"},
        said("s1", "user", "what is the capital of France", True, 9),
        metrics("s1", 9, v2v=610.0, first_clause_ms=None, llm_first_token_ms=260.0),
        said("s1", "assistant", "Paris is the capital of France, and it", False, 9),
        said("s1", "user", "and of Spain", False, 10),
        {"type": "interrupted", "session": "s1", "heard": "Paris is the capital", "played_ms": 900},
        said("s1", "assistant", "Paris is the capital", True, 9),
        error("s2", "engine", "llm timed out"),
    ]:
        model.apply(message)
    clock.now += 3
    return model


async def test_the_main_screen_matches_its_snapshot(tmp_path: Path) -> None:
    app = DashboardApp("ws://127.0.0.1:8080/events", model=scripted_model(), follow=False)
    async with app.run_test(size=(120, 40)) as pilot:
        app.selected = "s1"
        app.refresh_view()
        await pilot.pause()
        svg = app.export_screenshot()
    (tmp_path / "dashboard.svg").write_text(svg)  # to look at when it fails
    text = screen_text(svg)
    if os.environ.get("VOICE_AGENT_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text + "\n")
    assert SNAPSHOT.exists(), "no snapshot: run with VOICE_AGENT_UPDATE_SNAPSHOTS=1, read it"
    assert text + "\n" == SNAPSHOT.read_text(), f"the screen changed; see {tmp_path}"
    # what the snapshot must show, whatever else changes
    assert "● connected  ws://127.0.0.1:8080/events · sessions 2/8" in text
    assert re.search(r"s1 +Ada +webrtc +speaking +2m08s +9 +1", text)
    assert re.search(r"s2 +Captain +pcm +listening +15s +0 +0", text)
    assert re.search(r"first clause +—", text)
    assert "last 9 turns (window 100" in text
    assert "Paris is the capital (interrupted)" in text
    assert "and of Spain" in text
    assert "last: s2 engine: llm timed out (3s ago)" in text


async def test_the_app_follows_a_real_server_while_a_caller_talks(make_server: MakeServer) -> None:
    from tests.speech import speech_16k
    from voice_agent.bench.caller import PcmCaller

    server = await make_server()  # the real server, its /events feed, fake engines
    url = server.url.replace("http://", "ws://")
    app = DashboardApp(events_url(url, None), backoff=FAST)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, "the feed", lambda: "connected" in shown(app, "#status"))
        async with await PcmCaller.connect(url, "tutor") as caller:
            await wait_until(pilot, "the session", lambda: len(table_rows(app)) == 1)
            assert table_rows(app)[0][1:3] == ["Professor Lin", "pcm"]
            caller.say(speech_16k("What is the capital of France?"), 16000)
            await caller.wait_for("turn_metrics", within_s=15)
            await wait_until(pilot, "the turn", lambda: "turn 1" in shown(app, "#waterfall"))
            await wait_until(
                pilot, "the reply", lambda: "Paris is the capital." in shown(app, "#transcript")
            )
        await wait_until(pilot, "the end", lambda: table_rows(app)[0][3] == "ended")
        assert re.search(r"voice to voice +\d+ ms +\d+ ms +1", shown(app, "#stats"))
