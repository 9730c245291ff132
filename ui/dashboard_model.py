"""What the dashboard knows: sessions, the last turns, counts and the connection's state.

`DashboardModel.apply(message)` takes one message of `WS /events` (docs/protocol.md) and
updates the state; it never raises and never does I/O, so tests feed it plain dicts. Everything
is bounded: the turns ring (`TURNS_WINDOW`), each session's transcript (`TRANSCRIPT_LINES`), and
the sessions kept after they ended (`ENDED_KEPT`). Times come from `clock` (monotonic seconds).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STAGES: tuple[str, ...] = (
    "endpoint_ms",
    "asr_ms",
    "llm_first_token_ms",
    "first_clause_ms",
    "tts_first_chunk_ms",
    "voice_to_voice_ms",
)
"""The stages of a turn, in the order they usually happen (`turn_metrics` fields)."""

TURNS_WINDOW = 100
"""Turns kept (across sessions): the window of the percentiles and the sparkline."""
TRANSCRIPT_LINES = 200
"""Transcript lines kept per session."""
ENDED_KEPT = 10
"""Ended sessions kept (with their transcripts) after they end, newest first."""
MAX_SESSIONS = 512
"""A bound on live sessions too, whatever a server says."""
SAME_SESSION_S = 5.0
"""A session id in `hello` whose start differs more than this from ours is another session
(session ids start again at `s1` when the server restarts)."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0-100) by linear interpolation between closest ranks: the same
    definition as `numpy.percentile` (and `voice-agent bench`). None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(slots=True)
class Line:
    """One transcript line: `text` is the latest (partials are replaced in place)."""

    role: str
    turn: int | None
    text: str = ""
    final: bool = False
    interrupted: bool = False


@dataclass(slots=True)
class Session:
    id: str
    persona: str
    transport: str
    started_at: float
    state: str = "listening"
    ended_at: float | None = None
    turns: int = 0
    """Replies so far (distinct turns with `turn_metrics`)."""
    last_turn: int = 0
    interruptions: int = 0
    errors: int = 0
    version: int = 0
    """Bumped whenever the transcript changes."""
    lines: deque[Line] = field(default_factory=lambda: deque(maxlen=TRANSCRIPT_LINES))
    user_open: Line | None = None
    assistant_open: Line | None = None

    @property
    def live(self) -> bool:
        return self.ended_at is None


@dataclass(frozen=True, slots=True)
class Turn:
    """One `turn_metrics` message: the ms of each stage (None where the turn never got there)."""

    session: str
    turn: int
    reason: str
    speech_ms: float | None
    ms: Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    session: str | None
    code: str
    message: str
    fatal: bool
    at: float


@dataclass(frozen=True, slots=True)
class StageStats:
    p50: float | None
    p95: float | None
    n: int


@dataclass(slots=True)
class Connection:
    """The link to the server: `connecting` (first try), `connected`, `retrying` (waiting until
    `retry_at`), `reconnecting` (a try after a failure is in flight)."""

    state: str = "connecting"
    since: float = 0.0
    retry_at: float | None = None
    reason: str = ""
    connects: int = 0
    reconnected_at: float | None = None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any, default: int = 0) -> int:
    number = _num(value)
    return int(number) if number is not None else default


def _text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _persona_name(value: Any) -> str:
    if isinstance(value, Mapping):
        return _text(value.get("name")) or _text(value.get("id"), "?")
    return _text(value, "?")


class DashboardModel:
    """The dashboard's state, updated by `apply` (messages) and the `connection_*` calls."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.turns: deque[Turn] = deque(maxlen=TURNS_WINDOW)
        self.max_sessions: int | None = None
        self.interruptions = 0
        self.errors = 0
        self.last_error: ErrorInfo | None = None
        self.lost = 0
        self.ignored = 0
        self.connection = Connection(since=clock())

    # --- queries -------------------------------------------------------------------------------

    @property
    def live_sessions(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.live]

    def ordered(self) -> list[Session]:
        """Live sessions oldest first, then the ended ones, the latest to end first."""
        live = sorted(self.live_sessions, key=lambda s: s.started_at)
        ended = sorted((s for s in self.sessions.values() if not s.live), key=_ended_at)
        return live + ended[::-1]

    @property
    def last_turn(self) -> Turn | None:
        return self.turns[-1] if self.turns else None

    def most_recent(self) -> Session | None:
        """The newest live session, else the newest ended one, else None."""
        live = self.live_sessions
        pool = live or list(self.sessions.values())
        return max(pool, key=lambda s: s.started_at) if pool else None

    def stats(self) -> dict[str, StageStats]:
        """p50, p95 and n of each stage over the turns ring (null values left out)."""
        result = {}
        for stage in STAGES:
            values = [v for t in self.turns if (v := t.ms.get(stage)) is not None]
            result[stage] = StageStats(percentile(values, 50), percentile(values, 95), len(values))
        return result

    def voice_to_voice(self) -> list[float]:
        """voice_to_voice_ms of the turns in the ring that have one, oldest first."""
        return [v for t in self.turns if (v := t.ms.get("voice_to_voice_ms")) is not None]

    # --- the connection ------------------------------------------------------------------------

    def connection_trying(self) -> None:
        c = self.connection
        c.state = "connecting" if c.connects == 0 and not c.reason else "reconnecting"
        c.retry_at = None

    def connection_up(self) -> None:
        c, now = self.connection, self.clock()
        c.connects += 1
        if c.connects > 1:
            c.reconnected_at = now
        c.state, c.since, c.retry_at, c.reason = "connected", now, None, ""

    def connection_down(self, reason: str, retry_in_s: float) -> None:
        c, now = self.connection, self.clock()
        if c.state == "connected":
            c.since = now
        c.state, c.retry_at, c.reason = "retrying", now + retry_in_s, reason

    # --- messages ------------------------------------------------------------------------------

    def apply(self, message: Mapping[str, Any]) -> None:
        """Update the state with one `/events` message; unknown or malformed ones are counted
        in `ignored`, never raised."""
        handler = _HANDLERS.get(_text(message.get("type")))
        if handler is None:
            self.ignored += 1
            return
        try:
            handler(self, message)
        except (KeyError, TypeError, ValueError, AttributeError):
            self.ignored += 1

    def _hello(self, m: Mapping[str, Any]) -> None:
        now = self.clock()
        max_sessions = _num(m.get("max_sessions"))
        self.max_sessions = int(max_sessions) if max_sessions is not None else None
        present: set[str] = set()
        for entry in m.get("sessions") or []:
            sid = _text(entry.get("session"))
            if not sid:
                continue
            present.add(sid)
            started = now - (_num(entry.get("started_s_ago")) or 0.0)
            ours = self.sessions.get(sid)
            if ours is None or not ours.live or abs(ours.started_at - started) > SAME_SESSION_S:
                self._start(sid, entry, started)
            else:
                ours.persona = _persona_name(entry.get("persona"))
                ours.transport = _text(entry.get("transport"), ours.transport)
            if isinstance(entry.get("state"), str):  # not in the protocol (yet): use it if sent
                self.sessions[sid].state = entry["state"]
        for session in self.live_sessions:
            if session.id not in present:
                self._end(session, now)
        self._merge_turns(m.get("turns") or [])
        self._prune()

    def _merge_turns(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """The server's last turns replace ours where they overlap; ours not among them are
        older than all of them, so they stay in front."""
        theirs = [t for e in entries if (t := _turn(e)) is not None]
        keys = {(t.session, t.turn) for t in theirs}
        merged = [t for t in self.turns if (t.session, t.turn) not in keys] + theirs
        self.turns.clear()
        self.turns.extend(merged[-TURNS_WINDOW:])
        for turn in theirs:
            session = self.sessions.get(turn.session)
            if session is not None:
                _count_turn(session, turn.turn)

    def _session_started(self, m: Mapping[str, Any]) -> None:
        self._start(_text(m["session"]), m, self.clock())
        self._prune()

    def _session_ended(self, m: Mapping[str, Any]) -> None:
        session = self.sessions.get(_text(m["session"]))
        if session is not None and session.live:
            self._end(session, self.clock())
            self._prune()

    def _state(self, m: Mapping[str, Any]) -> None:
        session = self._session(m)
        if session.live:  # the last events of a session may come after its end
            session.state = _text(m["state"], "?")

    def _transcript(self, m: Mapping[str, Any]) -> None:
        session = self._session(m)
        session.version += 1
        text, final = _text(m.get("text")), bool(m.get("final"))
        turn = _int(m.get("turn"), -1)
        if m.get("role") == "user":
            if session.user_open is None:
                session.user_open = _add_line(session, "user", turn)
            session.user_open.text, session.user_open.final = text, final
            if final:
                session.user_open = None
            return
        line = session.assistant_open
        if line is not None and line.turn is None:
            line.turn = turn if turn >= 0 else None  # a reply interrupted before any text
        if line is None or line.turn != (turn if turn >= 0 else None):
            line = session.assistant_open = _add_line(session, "assistant", turn)
        elif line.interrupted:
            if final:  # after `interrupted`, only the final (what was heard) changes it
                line.text, line.final, session.assistant_open = text, True, None
            return
        if not final and line.text and not text.startswith(line.text):
            text = f"{line.text} {text}"  # a piece that does not continue the text: next words
        line.text, line.final = text, final
        if final:
            session.assistant_open = None

    def _interrupted(self, m: Mapping[str, Any]) -> None:
        session = self._session(m)
        session.version += 1
        session.interruptions += 1
        self.interruptions += 1
        line = session.assistant_open
        if line is None:  # nothing of the reply was shown yet: its line starts here
            line = _add_line(session, "assistant", -1)
        line.text, line.final, line.interrupted = _text(m.get("heard")), True, True
        session.assistant_open = line  # the turn's final (the heard text) lands here too

    def _turn_metrics(self, m: Mapping[str, Any]) -> None:
        turn = _turn(m)
        if turn is None:
            raise ValueError("turn_metrics without a session or turn")
        session, last = self._session(m), self.last_turn
        if last is not None and (last.session, last.turn) == (turn.session, turn.turn):
            self.turns[-1] = turn
        else:
            self.turns.append(turn)
        _count_turn(session, turn.turn)

    def _error(self, m: Mapping[str, Any]) -> None:
        sid = _text(m.get("session")) or None
        if sid is not None:
            self._session(m).errors += 1
        self.errors += 1
        self.last_error = ErrorInfo(
            sid,
            _text(m.get("code"), "?"),
            _text(m.get("message")),
            bool(m.get("fatal")),
            self.clock(),
        )

    def _lost(self, m: Mapping[str, Any]) -> None:
        self.lost += max(0, _int(m.get("count")))

    # --- helpers -------------------------------------------------------------------------------

    def _start(self, sid: str, m: Mapping[str, Any], started_at: float) -> None:
        self.sessions.pop(sid, None)  # a new session with an old id starts afresh, at the end
        self.sessions[sid] = Session(
            sid, _persona_name(m.get("persona")), _text(m.get("transport"), "?"), started_at
        )

    def _end(self, session: Session, now: float) -> None:
        session.ended_at, session.state = now, "ended"
        session.user_open = session.assistant_open = None

    def _session(self, m: Mapping[str, Any]) -> Session:
        """The message's session; one we did not hear start (events lost) is added."""
        sid = _text(m["session"])
        if not sid:
            raise ValueError("no session")
        session = self.sessions.get(sid)
        if session is None:
            session = self.sessions[sid] = Session(sid, "?", "?", self.clock())
            self._prune()
        return session

    def _prune(self) -> None:
        ended = sorted((s for s in self.sessions.values() if not s.live), key=_ended_at)
        for session in ended[: max(0, len(ended) - ENDED_KEPT)]:
            del self.sessions[session.id]
        live = self.live_sessions
        for session in live[: max(0, len(live) - MAX_SESSIONS)]:
            del self.sessions[session.id]


def _ended_at(session: Session) -> float:
    return session.ended_at or 0.0


def _add_line(session: Session, role: str, turn: int) -> Line:
    line = Line(role, turn if turn >= 0 else None)
    session.lines.append(line)
    return line


def _count_turn(session: Session, turn: int) -> None:
    if turn > session.last_turn:  # turn numbers only grow within a session
        session.turns += 1
        session.last_turn = turn


def _turn(m: Mapping[str, Any]) -> Turn | None:
    sid, number = _text(m.get("session")), _num(m.get("turn"))
    if not sid or number is None:
        return None
    return Turn(
        sid,
        int(number),
        _text(m.get("reason")),
        _num(m.get("speech_ms")),
        {stage: _num(m.get(stage)) for stage in STAGES},
    )


_HANDLERS: dict[str, Callable[[DashboardModel, Mapping[str, Any]], None]] = {
    "hello": DashboardModel._hello,
    "session_started": DashboardModel._session_started,
    "session_ended": DashboardModel._session_ended,
    "state": DashboardModel._state,
    "transcript": DashboardModel._transcript,
    "interrupted": DashboardModel._interrupted,
    "turn_metrics": DashboardModel._turn_metrics,
    "error": DashboardModel._error,
    "lost": DashboardModel._lost,
}
