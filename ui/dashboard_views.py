"""How the dashboard shows its model: pure functions from state to Rich text (testable alone)."""

from __future__ import annotations

import math

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from voice_agent.ui.dashboard_model import (
    STAGES,
    TURNS_WINDOW,
    Connection,
    DashboardModel,
    Session,
    Turn,
)

STAGE_LABELS = {
    "endpoint_ms": "endpoint",
    "asr_ms": "asr",
    "llm_first_token_ms": "llm first token",
    "first_clause_ms": "first clause",
    "tts_first_chunk_ms": "tts first chunk",
    "voice_to_voice_ms": "voice to voice",
}
LABEL_WIDTH = 16
VALUE_WIDTH = 9
STATES = {
    "listening": ("listening", "green"),
    "user_speaking": ("user speaking", "yellow"),
    "thinking": ("thinking", "magenta"),
    "speaking": ("speaking", "cyan"),
    "ended": ("ended", "dim"),
}
_EIGHTHS = " ▏▎▍▌▋▊▉"
BAR_STYLE = "steel_blue1"
TOTAL_STYLE = "bold spring_green3"
WAIT_STYLE = "grey37"


def fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def fmt_age(seconds: float) -> str:
    """4s, 2m05s, 1h02m."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 x 10^k (at least 100) that is >= value: the axis' end."""
    value = max(value, 100.0)
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


# --- the status line ---------------------------------------------------------------------------


def status_text(model: DashboardModel, url: str, now: float) -> Text:
    """Where the dashboard is connected, and how that is going."""
    c: Connection = model.connection
    text = Text()
    if c.state == "connected":
        text.append("● connected", "bold green")
    elif c.state == "connecting":
        text.append("◌ connecting…", "bold")
    else:
        what = "refused by the server" if c.reason.startswith("refused") else "server unreachable"
        left = max(0.0, (c.retry_at or now) - now)
        when = "now" if c.state == "reconnecting" else f"in {math.ceil(left)}s"
        text.append(f"○ {what} — retrying {when}", "bold yellow")
    text.append(f"  {url}", "dim")
    if c.state == "connected":
        limit = f"/{model.max_sessions}" if model.max_sessions else ""
        text.append(f" · sessions {len(model.live_sessions)}{limit}")
        if c.reconnected_at is not None:
            text.append(f" · reconnected {fmt_age(now - c.reconnected_at)} ago", "green")
    else:
        if c.reason:
            text.append(f" · {c.reason}", "dim")
        if c.connects:
            text.append(f" · down {fmt_age(now - c.since)}, showing what it had", "dim")
    if model.lost:
        text.append(f" · {model.lost} events lost", "yellow")
    return text


# --- sessions ----------------------------------------------------------------------------------

SESSION_COLUMNS = ("session", "persona", "transport", "state", "age", "turns", "interrupted")


def session_cells(session: Session, now: float) -> tuple[Text, ...]:
    """One row of the sessions table."""
    label, style = STATES.get(session.state, (session.state, ""))
    dim = "dim" if not session.live else ""
    age = (session.ended_at if session.ended_at is not None else now) - session.started_at
    return (
        Text(session.id, style=dim or "bold"),
        Text(session.persona, style=dim),
        Text(session.transport, style=dim),
        Text(label, style=style),
        Text(fmt_age(age), style=dim, justify="right"),
        Text(str(session.turns), style=dim, justify="right"),
        Text(str(session.interruptions), style=dim, justify="right"),
    )


# --- the last turn's waterfall -----------------------------------------------------------------


def _bar(start: float, end: float, ms_per_cell: float, cells: int, style: str) -> Text:
    """Dim rule from 0 to `start`, solid from `start` to `end` (eighths of a cell at its end)."""
    begin = min(cells, round(max(0.0, start) / ms_per_cell))
    stop = min(float(cells), max(0.0, end) / ms_per_cell)
    full = max(0, math.floor(stop) - begin)
    part = _EIGHTHS[int((stop - math.floor(stop)) * 8)] if math.floor(stop) >= begin else ""
    solid = "█" * full + part.strip()
    if not solid and end > start:
        solid = "▏"
    bar = Text("─" * begin, style=WAIT_STYLE)
    bar.append(solid, style=style)
    bar.pad_right(cells - len(bar))
    bar.truncate(cells)
    return bar


def waterfall(turn: Turn | None, width: int) -> Text:
    """The last turn by stage: each bar spans from the latest earlier milestone to the stage's
    own time, on one ms axis (all times count from the end of the user's speech)."""
    if turn is None:
        return Text("no turn yet: the first reply will show here", style="dim")
    cells = max(10, width - LABEL_WIDTH - VALUE_WIDTH)
    values = [v for stage in STAGES if (v := turn.ms.get(stage)) is not None]
    scale = nice_ceiling(max(values, default=0.0))
    ms_per_cell = scale / cells
    text = Text(f"{turn.session} · turn {turn.turn}", style="bold")
    if turn.speech_ms is not None:
        text.append(f" · spoke {turn.speech_ms / 1000:.1f} s", style="dim")
    if turn.reason:
        text.append(f" · {turn.reason}")
    seen: list[float] = []
    for stage in STAGES:
        value = turn.ms.get(stage)
        total = stage == "voice_to_voice_ms"
        text.append("\n")
        text.append(f"{STAGE_LABELS[stage]:<{LABEL_WIDTH}}", style="bold" if total else "")
        if value is None:
            text.append(" " * cells)
        else:
            start = max((v for v in seen if v <= value), default=0.0)
            text.append_text(
                _bar(start, value, ms_per_cell, cells, TOTAL_STYLE if total else BAR_STYLE)
            )
            seen.append(value)
        text.append(f"{fmt_ms(value):>{VALUE_WIDTH}}", style="bold" if total else "")
    text.append("\n")
    text.append_text(_axis(scale, cells))
    return text


def _axis(scale: float, cells: int) -> Text:
    mid, end = f"{scale / 2:g}", f"{scale:g} ms"
    line = [" "] * cells
    line[0] = "0"
    at = cells // 2 - len(mid) // 2
    if at + len(mid) < cells - len(end):  # room for the middle mark
        line[at : at + len(mid)] = mid
    line[cells - len(end) :] = end
    return Text(" " * LABEL_WIDTH + "".join(line), style="dim")


# --- percentiles, sparkline, counts ------------------------------------------------------------


def stats_text(model: DashboardModel) -> Text:
    """p50 / p95 / n per stage over the turns ring."""
    stats = model.stats()
    text = Text(f"{'':<{LABEL_WIDTH}}{'p50':>9}{'p95':>10}{'n':>6}", style="dim")
    for stage in STAGES:
        s = stats[stage]
        total = stage == "voice_to_voice_ms"
        text.append("\n")
        text.append(
            f"{STAGE_LABELS[stage]:<{LABEL_WIDTH}}{fmt_ms(s.p50):>9}{fmt_ms(s.p95):>10}{s.n:>6}",
            style="bold" if total else "",
        )
    return text


def stats_title(model: DashboardModel) -> str:
    return f"p50 / p95 · last {len(model.turns)} turns (window {TURNS_WINDOW}, all sessions)"


def sparkline_caption(model: DashboardModel) -> Text:
    values = model.voice_to_voice()
    if not values:
        return Text("voice to voice: no turns yet", style="dim")
    text = Text(f"latest {fmt_ms(values[-1])}", style="bold")
    text.append(f" · min {fmt_ms(min(values))} · max {fmt_ms(max(values))}")
    text.append(f" · last {len(values)} turns", style="dim")
    return text


def counts_text(model: DashboardModel, now: float) -> Text:
    text = Text("interruptions ")
    text.append(str(model.interruptions), style="bold")
    text.append("   errors ")
    text.append(str(model.errors), style="bold red" if model.errors else "bold")
    e = model.last_error
    if e is not None:
        where = f"{e.session} " if e.session else ""
        text.append(f"   last: {where}{e.code}{', fatal' if e.fatal else ''}: ", style="dim")
        text.append(e.message or "(no message)", style="red")
        text.append(f" ({fmt_age(now - e.at)} ago)", style="dim")
    return text


# --- the transcript ----------------------------------------------------------------------------


def transcript(session: Session | None) -> RenderableType:
    """User and assistant lines of one session; partials dim, interruptions marked."""
    if session is None:
        return Text("no session yet", style="dim")
    if not session.lines:
        return Text("nothing said since the dashboard attached", style="dim")
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(no_wrap=True, width=9)
    grid.add_column(ratio=1)
    for line in session.lines:
        role = Text(line.role, style="bold cyan" if line.role == "assistant" else "bold")
        if line.final and not line.text:
            body = Text("(not heard)", style="dim")
        else:
            body = Text(line.text, style="" if line.final else "dim italic")
        if line.interrupted:
            body.append(" (interrupted)", style="bold yellow")
        grid.add_row(role, body)
    return grid


def transcript_title(session: Session | None, *, pinned: bool) -> str:
    if session is None:
        return "transcript"
    how = "selected" if pinned else "most recent"
    ended = ", ended" if not session.live else ""
    return f"transcript · {session.id} ({session.persona}{ended}) · {how}"
