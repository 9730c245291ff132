"""`voice-agent dashboard`: a terminal view of a running server's `WS /events`, for operators.

It shows the connection, the live sessions, the last turn as a waterfall of its stages, p50/p95
per stage over the last turns, a sparkline of voice-to-voice latency, interruption and error
counts, and the live transcript of the selected session. The state lives in `DashboardModel`
(dashboard_model.py), its text in dashboard_views.py, the network in dashboard_client.py; this
module is the Textual app that puts them on screen. `run_dashboard(url, token)` runs it.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import RenderableType
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Sparkline, Static

from voice_agent.ui.dashboard_client import (
    DEFAULT_BACKOFF,
    Backoff,
    events_url,
    follow_events,
    shown_url,
)
from voice_agent.ui.dashboard_model import DashboardModel, Session, Turn
from voice_agent.ui.dashboard_views import (
    SESSION_COLUMNS,
    counts_text,
    session_cells,
    sparkline_caption,
    stats_text,
    stats_title,
    status_text,
    transcript,
    transcript_title,
    waterfall,
)

REFRESH_S = 0.1
"""How often the screen catches up with the messages that came in (at most)."""
TICK_S = 1.0
"""How often ages and the retry countdown move on."""


class Waterfall(Widget):
    """The last turn's stages as bars on one ms axis; its width follows the widget's."""

    turn: reactive[Turn | None] = reactive(None, layout=True)

    def render(self) -> RenderableType:
        text = waterfall(self.turn, self.content_size.width)
        text.no_wrap, text.overflow = True, "crop"
        return text


class DashboardApp(App[int]):
    """The dashboard. `url` is the full `/events` URL (see `events_url`); with `follow=False`
    it only shows `model` (tests inject messages into it)."""

    CSS_PATH = "dashboard.tcss"
    TITLE = "voice-agent dashboard"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("tab,down", "select(1)", "next session", priority=True),
        Binding("shift+tab,up", "select(-1)", "previous", priority=True),
        Binding("escape", "follow_newest", "follow newest"),
    ]

    def __init__(
        self,
        url: str,
        *,
        model: DashboardModel | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        follow: bool = True,
    ) -> None:
        super().__init__()
        self.url = url
        self.model = model or DashboardModel()
        self.selected: str | None = None
        """The session picked with the keys; None: follow the most recent one."""
        self._backoff = backoff
        self._follow_feed = follow
        self._dirty = True
        self._table_ids: list[str] = []
        self._table_cells: dict[str, tuple[Any, ...]] = {}
        self._transcript_key: tuple[object, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield DataTable(id="sessions", cursor_type="row", zebra_stripes=False)
        with Horizontal(id="main"):
            with VerticalScroll(id="left"):
                yield Waterfall(id="waterfall")
                yield Static(id="stats")
                with Vertical(id="trend"):
                    yield Static(id="trend-caption")
                    yield Sparkline([], id="sparkline")
            with VerticalScroll(id="transcript-box"):
                yield Static(id="transcript")
        yield Static(id="counts")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#sessions", DataTable)
        table.can_focus = False  # the keys are the app's: tab and the arrows pick a session
        for column in SESSION_COLUMNS:
            table.add_column(column, key=column)
        table.border_title = "sessions"
        self.query_one("#waterfall").border_title = "last turn (ms from the end of speech)"
        self.query_one("#trend").border_title = "voice to voice"
        self.refresh_view()
        self.set_interval(REFRESH_S, self._catch_up)
        self.set_interval(TICK_S, self.refresh_view)
        if self._follow_feed:
            self.run_worker(self._follow_events(), name="events", exclusive=True)

    # --- the feed ------------------------------------------------------------------------------

    async def _follow_events(self) -> None:
        await follow_events(
            self.url,
            on_message=self._feed_message,
            on_trying=self._feed_trying,
            on_connected=self._feed_up,
            on_disconnected=self._feed_down,
            backoff=self._backoff,
        )

    def _feed_message(self, message: dict[str, Any]) -> None:
        self.model.apply(message)
        self._dirty = True

    def _feed_trying(self) -> None:
        self.model.connection_trying()
        self._dirty = True

    def _feed_up(self) -> None:
        self.model.connection_up()
        self._dirty = True

    def _feed_down(self, reason: str, retry_in_s: float) -> None:
        self.model.connection_down(reason, retry_in_s)
        self._dirty = True

    def _catch_up(self) -> None:
        if self._dirty:
            self.refresh_view()

    # --- selection -----------------------------------------------------------------------------

    def current_session(self) -> Session | None:
        """The selected session, or the most recent one when none is (or it is gone)."""
        if self.selected is not None and self.selected not in self.model.sessions:
            self.selected = None
        if self.selected is not None:
            return self.model.sessions[self.selected]
        return self.model.most_recent()

    def action_select(self, step: int) -> None:
        ids = [s.id for s in self.model.ordered()]
        if not ids:
            return
        current = self.current_session()
        at = ids.index(current.id) if current is not None and current.id in ids else -1
        self.selected = ids[(at + step) % len(ids)]
        self.refresh_view()

    def action_follow_newest(self) -> None:
        self.selected = None
        self.refresh_view()

    # --- drawing -------------------------------------------------------------------------------

    def refresh_view(self) -> None:
        """Show the model as it is now."""
        self._dirty = False
        model, now = self.model, self.model.clock()
        self.query_one("#status", Static).update(status_text(model, shown_url(self.url), now))
        session = self.current_session()
        self._update_table(now, session)
        self.query_one(Waterfall).turn = model.last_turn
        stats = self.query_one("#stats", Static)
        stats.update(stats_text(model))
        stats.border_title = stats_title(model)
        self.query_one("#trend-caption", Static).update(sparkline_caption(model))
        sparkline = self.query_one(Sparkline)
        sparkline.data = model.voice_to_voice()
        sparkline.display = bool(sparkline.data)
        self._update_transcript(session)
        self.query_one("#counts", Static).update(counts_text(model, now))

    def _update_table(self, now: float, current: Session | None) -> None:
        table: DataTable[Any] = self.query_one("#sessions", DataTable)
        sessions = self.model.ordered()
        ids = [s.id for s in sessions]
        if ids != self._table_ids:
            table.clear()
            self._table_cells = {}
            for s in sessions:
                cells = session_cells(s, now)
                table.add_row(*cells, key=s.id)
                self._table_cells[s.id] = cells
            self._table_ids = ids
        else:
            for s in sessions:
                cells = session_cells(s, now)
                before = self._table_cells[s.id]
                for column, old, new in zip(SESSION_COLUMNS, before, cells, strict=True):
                    if old != new:
                        table.update_cell(s.id, column, new, update_width=True)
                self._table_cells[s.id] = cells
        table.show_cursor = current is not None
        if current is not None and current.id in ids:
            row = ids.index(current.id)
            if table.cursor_row != row:
                table.move_cursor(row=row)

    def _update_transcript(self, session: Session | None) -> None:
        box = self.query_one("#transcript-box", VerticalScroll)
        box.border_title = transcript_title(session, pinned=self.selected is not None)
        key = (session.id, session.version) if session is not None else ()
        if key == self._transcript_key:
            return
        self._transcript_key = key
        self.query_one("#transcript", Static).update(transcript(session))
        box.scroll_end(animate=False)


def run_dashboard(url: str, token: str | None = None) -> int:
    """Run the dashboard on the server at `url` (`ws://HOST:PORT`) until the user quits;
    the exit status: 0, or 2 for a URL that names no server."""
    try:
        target = events_url(url, token)
    except ValueError as exc:
        print(f"voice-agent dashboard: {exc}", file=sys.stderr)
        return 2
    app = DashboardApp(target)
    app.run()
    return app.return_code or 0


__all__ = ["DashboardApp", "Waterfall", "run_dashboard"]
