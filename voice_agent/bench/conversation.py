"""`voice-agent bench conversation`: simulated people talking to a server, measured from outside.

Each simulated user is a real client over a real transport (`WebRTCCaller`, the default,
`PcmCaller` or `RealtimeCaller` on the OpenAI Realtime API), talking in real time with speech
made by the project's own TTS. It goes through a script, turn after turn: a plain question; a
sentence with a 600 ms pause in the middle; a request for a long reply that it interrupts
("Wait, stop..."); and a long reply over which it says "uh-huh". N users talk at once, each in
its own session.

Everything is measured at the client, from the audio itself, on one monotonic clock:
- voice-to-voice: the last audible sample of the user's speech as it was sent -> the first
  reply sample above -40 dBFS as it arrived. Beside it, the server's own figure for the same
  turn (`turn_metrics.voice_to_voice_ms`, from its VAD's end of speech to its first frame sent):
  the difference is what the transport and the measuring points add.
- barge-in reaction: the first audible sample of the interruption as sent -> the first 20 ms of
  reply that arrived at least 20 dB below the reply's level before it.
- false cut-offs: the reply became audible during the mid-sentence pause or before the sentence
  was finished; backchannels: the reply went on after the "uh-huh".
- CPU: the server process's CPU time over the run (in cores), when this command started it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voice_agent.audio.pcm import dbfs
from voice_agent.bench.caller import Caller, PcmCaller, RealtimeCaller, Said, WebRTCCaller
from voice_agent.bench.figures import Figure, NoPlot, pyplot
from voice_agent.bench.script import (
    BACKCHANNELS,
    BARGE_INS,
    LONG_ASKS,
    PAUSE_S,
    PAUSED,
    QUESTIONS,
    Line,
    line,
    trimmed,
)
from voice_agent.config import Settings
from voice_agent.engines import load_tts
from voice_agent.looplag import LoopLag
from voice_agent.modelfiles import ModelStore
from voice_agent.tasks import TaskOwner
from voice_agent.timeline import STAGES

Progress = Callable[[str], None]
RATE = 16000
SCRIPT = ("question", "pause", "barge-in", "question", "backchannel")

CALLERS: dict[str, type[WebRTCCaller] | type[PcmCaller] | type[RealtimeCaller]] = {
    "webrtc": WebRTCCaller,
    "pcm": PcmCaller,
    "realtime": RealtimeCaller,
}
"""The callers by the transport they use."""


@dataclass(slots=True)
class Lines:
    questions: list[Line]
    halves: list[tuple[Line, Line]]
    asks: list[Line]
    barge_ins: list[Line]
    backchannels: list[Line]


BEHIND_WARN_MS = 500.0
"""Reply audio this far behind the clock makes the run say so."""


@dataclass(slots=True)
class Result:
    """What one simulated user measured."""

    v2v_ms: list[float] = field(default_factory=list)
    server_v2v_ms: list[float] = field(default_factory=list)
    server_turns: list[dict[str, Any]] = field(default_factory=list)
    """The server's `turn_metrics` of the measured turns: where its time went."""
    barge_ms: list[float] = field(default_factory=list)
    cut: list[float] = field(default_factory=list)
    kept: list[float] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    """Turns that got no reply (or no measurable one), and why."""
    behind_ms: list[float] = field(default_factory=list)
    """How far the reply audio fell behind at worst (`Caller.behind_s`), where measured."""


def voice_script(settings: Settings) -> Lines:
    """Every line of the script, spoken by the project's own Piper voice."""
    store = ModelStore(cache_dir=settings.engines.models_cache)
    tts = load_tts("piper", settings.engines.tts, store)

    def say(text: str) -> Line:
        return line(tts, text, RATE)

    return Lines(
        questions=[say(q) for q in QUESTIONS],
        halves=[(say(a), say(b)) for a, b in PAUSED],
        asks=[say(q) for q in LONG_ASKS],
        barge_ins=[say(t) for t in BARGE_INS],
        backchannels=[say(t) for t in BACKCHANNELS],
    )


async def _out(caller: Caller, said: Said) -> None:
    """Until `said` has all gone out; ConnectionError if the server ends the session first
    (then the mic is no longer heard, and would never finish)."""
    while not said.done.is_set():
        if caller.lost is not None:
            raise ConnectionError(caller.lost)
        await asyncio.sleep(0.02)


async def _audible_after(caller: Caller, t: float, within_s: float) -> float | None:
    deadline = time.monotonic() + within_s
    while (at := caller.first_audible(t)) is None:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.02)
    return at


async def _quiet(caller: Caller, quiet_s: float = 0.5, within_s: float = 60) -> None:
    """Until the reply is over, as a person would tell: the assistant says it is listening
    again, and no reply audio has arrived for `quiet_s` (a pause between two sentences of a
    reply, while the next one is being made, is not the end of it)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        states = [e["state"] for e in caller.events if e.get("type") == "state"]
        last = next((h.at for h in reversed(caller.heard) if dbfs(h.pcm) > -40), 0.0)
        if states[-1:] in ([], ["listening"]) and time.monotonic() - last >= quiet_s:
            return
        await asyncio.sleep(0.05)


async def _server_metrics(caller: Caller, after: int) -> dict[str, Any] | None:
    with contextlib.suppress(TimeoutError):
        return await caller.wait_for("turn_metrics", within_s=3, after=after)
    return None


async def _question(caller: Caller, q: Line, r: Result) -> None:
    mark = len(caller.events)
    said = caller.say(q.pcm, RATE, "question")
    await _out(caller, said)
    end = said.started + q.last / RATE
    heard = await _audible_after(caller, end, 30)
    if heard is None:
        r.missed.append("question: no reply within 30 s")
        return
    r.v2v_ms.append(1000 * (heard - end))
    server = await _server_metrics(caller, mark)
    if server is not None and isinstance(server.get("voice_to_voice_ms"), int | float):
        r.server_v2v_ms.append(float(server["voice_to_voice_ms"]))
        r.server_turns.append(server)


async def _pause(caller: Caller, halves: tuple[Line, Line], r: Result) -> None:
    first, second = halves
    began = caller.say(trimmed(first, RATE), RATE, "first half")
    caller.say(np.zeros(int(PAUSE_S * RATE), np.int16), RATE, "pause")
    said = caller.say(trimmed(second, RATE), RATE, "second half")
    await _out(caller, said)
    paused_at, end = began.ended - 0.02, said.ended - 0.02
    early = caller.first_audible(paused_at)  # a reply that came before they had finished
    r.cut.append(float(early is not None and early < end))
    if await _audible_after(caller, paused_at, 30) is None:
        r.missed.append("paused sentence: no reply within 30 s")


async def _over_reply(caller: Caller, ask: Line, over: Line, barge: bool, r: Result) -> None:
    said = caller.say(ask.pcm, RATE, "ask")
    await _out(caller, said)
    heard = await _audible_after(caller, said.started + ask.last / RATE, 30)
    if heard is None:
        r.missed.append("long reply: no reply within 30 s")
        return
    await asyncio.sleep(max(0.0, heard + 1.2 - time.monotonic()))
    before = [dbfs(h.pcm) for h in caller.heard if h.at >= heard + 0.2]
    level = float(np.median([d for d in before if d > -40] or [-40.0]))
    mark = len(caller.events)
    words = caller.say(over.pcm, RATE, "barge-in" if barge else "backchannel")
    await _out(caller, words)
    onset = words.started + over.first / RATE
    if barge:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            down = next(
                (h.at for h in caller.heard if h.at > onset and dbfs(h.pcm) <= level - 20), None
            )
            if down is not None:
                r.barge_ms.append(1000 * (down - onset))
                break
            await asyncio.sleep(0.02)
        else:
            r.missed.append("barge-in: the reply did not go 20 dB down within 3 s")
    else:
        await asyncio.sleep(1.0)
        cut = any(e.get("type") == "interrupted" for e in caller.events[mark:])
        still = caller.first_audible(words.ended + 0.3) is not None
        r.kept.append(float(not cut and still))


PACES: dict[str, tuple[float, float]] = {"back-to-back": (0.0, 0.0), "human": (1.0, 3.0)}
"""Silence between the end of a reply and the user's next turn: none, or 1-3 s (a person who
listens to the end, then thinks)."""


async def simulate(
    caller: Caller, lines: Lines, turns: int, seed: int, pace: str = "back-to-back"
) -> Result:
    """One user going through `turns` turns of the script, `pace` apart (`PACES`)."""
    r = Result()
    rng = np.random.default_rng(seed)
    await caller.wait_for("session")
    try:
        await _script(caller, lines, turns, seed, pace, rng, r)
    except ConnectionError as exc:  # measured so far, kept; the rest is missed
        r.missed.append(f"session lost: {exc}")
    return r


async def _script(
    caller: Caller,
    lines: Lines,
    turns: int,
    seed: int,
    pace: str,
    rng: np.random.Generator,
    r: Result,
) -> None:
    for i in range(turns):
        if i:
            await asyncio.sleep(float(rng.uniform(*PACES[pace])))
        k = seed + i
        scenario = SCRIPT[i % len(SCRIPT)]
        if scenario == "question":
            await _question(caller, lines.questions[k % len(lines.questions)], r)
        elif scenario == "pause":
            await _pause(caller, lines.halves[k % len(lines.halves)], r)
        else:
            barge = scenario == "barge-in"
            over = (lines.barge_ins if barge else lines.backchannels)[k % 2]
            await _over_reply(caller, lines.asks[k % len(lines.asks)], over, barge, r)
        await _quiet(caller)


@dataclass(slots=True)
class Served:
    url: str
    """ws://host:port"""
    pid: int | None
    """The server's process, when this command started it (for its CPU use)."""


def bench_server(
    url: str | None, argv: Sequence[str], progress: Progress, what: str, sessions: int
) -> contextlib.AbstractAsyncContextManager[Served]:
    """The server at `url`, or (None) one started for the `what` with `argv`, admitting at
    least `sessions` at once (whatever this machine's measured capacity: the bench measures
    past it)."""
    if url is not None:
        return contextlib.nullcontext(Served(url.rstrip("/"), None))
    progress(f"starting a server (voice-agent serve) for the {what}")
    return self_started_server([*argv, "--set", f"server.max_sessions={max(1, sessions)}"])


@contextlib.asynccontextmanager
async def self_started_server(argv: Sequence[str]) -> AsyncIterator[Served]:
    """`voice-agent serve` in a child process on a free port, until the block ends.
    `argv`: settings flags to pass on (--config, --set)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"voice-agent-bench-{port}.log"
    with log.open("w") as out:
        cmd = [sys.executable, "-m", "voice_agent", "serve", "--port", str(port), *argv]
        child = await asyncio.create_subprocess_exec(*cmd, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 180
        while True:
            if child.returncode is not None:
                raise RuntimeError(f"the server exited ({child.returncode}); see {log}")
            with contextlib.suppress(OSError):
                await asyncio.to_thread(
                    urllib.request.urlopen, f"http://127.0.0.1:{port}/healthz", timeout=2
                )
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within 3 minutes; see {log}")
            await asyncio.sleep(0.5)
        yield Served(f"ws://127.0.0.1:{port}", child.pid)
    finally:
        if child.returncode is None:
            child.terminate()
            try:
                async with asyncio.timeout(30):
                    await child.wait()
            except TimeoutError:
                child.kill()
                await child.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class Outcome:
    """What a run of N simulated users gave."""

    results: list[Result]
    failures: list[str]
    wall_s: float
    server_cores: float | None
    client_cores: float
    client_lag_ms: list[float]
    """The simulated callers' event loop lag (voice_agent.looplag), every 100 ms of the run."""


async def run_users(
    served: Served,
    lines: Lines,
    *,
    sessions: int,
    turns: int,
    transport: str,
    persona: str | None = None,
    pace: str = "back-to-back",
    progress: Progress = lambda _: None,
) -> Outcome:
    """`sessions` simulated users at once on a running server, each through `turns` turns;
    `progress` hears of users that failed and of reply audio that fell behind."""
    connect = CALLERS[transport].connect

    async def one(i: int) -> Result:
        async with await connect(served.url, persona) as caller:
            result = await simulate(caller, lines, turns, seed=i, pace=pace)
            if caller.behind_s is not None:
                result.behind_ms.append(1000.0 * caller.behind_s)
            return result

    cpu0 = cpu_seconds(served.pid) if served.pid else None
    client0, t0 = time.process_time(), time.monotonic()
    lag, watcher = LoopLag(window_s=24 * 3600.0), TaskOwner("bench")
    watcher.create_task(lag.run(), "loop-lag")
    try:
        outcomes = await asyncio.gather(*(one(i) for i in range(sessions)), return_exceptions=True)
    finally:
        await watcher.cancel_tasks()
    wall = time.monotonic() - t0
    server_cores = (
        (cpu_seconds(served.pid) - cpu0) / wall if served.pid and cpu0 is not None else None
    )
    results = [o for o in outcomes if isinstance(o, Result)]
    failures = [f"{type(o).__name__}: {o}" for o in outcomes if not isinstance(o, Result)]
    for failure in failures:
        progress(f"a simulated user failed: {failure}")
    behind = max((ms for r in results for ms in r.behind_ms), default=0.0)
    if behind > BEHIND_WARN_MS:
        progress(
            f"the reply audio fell {behind / 1000:.1f} s behind the clock: the machine (the "
            "server, or these simulated callers beside it) is past what it holds, and the "
            "figures include that backlog"
        )
    return Outcome(
        results,
        failures,
        wall,
        server_cores,
        (time.process_time() - client0) / wall,
        [1000.0 * x for x in lag.samples],
    )


async def run(
    settings: Settings,
    *,
    url: str | None,
    sessions: int,
    turns: int,
    transport: str,
    argv: Sequence[str],
    progress: Progress,
    persona: str | None = None,
    pace: str = "back-to-back",
) -> tuple[list[Figure], dict[str, Any]]:
    """Run the script with `sessions` users at once; the figures, and the details for JSON."""
    progress("voicing the script with the project's TTS")
    lines = await asyncio.to_thread(voice_script, settings)
    async with bench_server(url, argv, progress, "bench", sessions) as served:
        progress(f"{sessions} simulated users x {turns} turns over {transport}, in real time")
        out = await run_users(
            served,
            lines,
            sessions=sessions,
            turns=turns,
            transport=transport,
            persona=persona,
            pace=pace,
            progress=progress,
        )
    return figures_of(out, sessions, transport), details_of(
        out, sessions, turns, transport, persona
    )


def figures_of(out: Outcome, sessions: int, transport: str) -> list[Figure]:
    """The figures of one run."""
    name = f"{sessions} x {transport}"

    def every(pick: Callable[[Result], list[Any]]) -> list[Any]:
        return [x for r in out.results for x in pick(r)]

    v2v = Figure(name, "voice-to-voice, at the client", "ms", every(lambda r: r.v2v_ms))
    v2v.target, v2v.p95_target = (300.0, 500.0) if sessions == 1 else (None, 800.0)
    figures = [
        v2v,
        Figure(name, "voice-to-voice, server's report", "ms", every(lambda r: r.server_v2v_ms)),
        *[
            Figure(name, f"  server: {stage.replace('_', ' ')}", "ms", samples)
            for stage in STAGES[:-1]
            if (
                samples := [
                    t[f"{stage}_ms"]
                    for t in every(lambda r: r.server_turns)
                    if isinstance(t.get(f"{stage}_ms"), int | float)
                ]
            )
        ],
        Figure(
            name,
            "barge-in: onset -> reply 20 dB down",
            "ms",
            every(lambda r: r.barge_ms),
            p95_target=100.0,
        ),
        Figure(name, "false cut-offs", "share", every(lambda r: r.cut), 0.05, share=True),
        Figure(name, "backchannels kept", "share", every(lambda r: r.kept), share=True),
        Figure(name, "client CPU", "cores", [out.client_cores]),
        Figure(name, "simulated callers' event loop lag", "ms", out.client_lag_ms),
        Figure(name, "reply audio behind the clock, worst", "ms", every(lambda r: r.behind_ms)),
    ]
    if out.server_cores is not None:
        figures.append(Figure(name, "server CPU", "cores", [out.server_cores]))
    return figures


def details_of(
    out: Outcome, sessions: int, turns: int, transport: str, persona: str | None
) -> dict[str, Any]:
    """What JSON keeps of one run beside its figures."""
    turns_seen = [t for r in out.results for t in r.server_turns]
    return {
        "sessions": sessions,
        "turns_per_session": turns,
        "transport": transport,
        "persona": persona,
        "wall_s": round(out.wall_s, 1),
        "end_of_turn_reasons": dict(collections.Counter(str(t.get("reason")) for t in turns_seen)),
        "missed": [m for r in out.results for m in r.missed],
        "failures": out.failures,
    }


def plot(figures: list[Figure], title: str, path: Path) -> None:
    """A PNG of the latency figures' distributions; NoPlot says why not."""
    plt = pyplot()
    shown = [f for f in figures if f.unit == "ms" and f.samples]
    if not shown:
        raise NoPlot("no latency was measured")
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 2.2 * len(shown) + 0.6), squeeze=False)
    for ax, f in zip(axes[:, 0], shown, strict=True):
        ax.hist(f.samples, bins=min(30, max(5, len(f.samples))), color="#d9480f", alpha=0.8)
        ax.axvline(f.median, color="#222", linestyle="-", label=f"p50 {f.median:.0f} ms")
        ax.axvline(f.p95, color="#222", linestyle="--", label=f"p95 {f.p95:.0f} ms")
        for target in (f.target, f.p95_target):
            if target is not None:
                ax.axvline(target, color="#2b8a3e", linestyle=":", label=f"target {target:g} ms")
        ax.set_title(f.metric, fontsize=10, loc="left")
        ax.set_xlabel("ms")
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
