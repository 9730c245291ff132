"""`voice-agent bench turns`: how fast and how well the assistant takes turns, on this machine.

Everything runs for real and in real time (VAD, Smart Turn, Whisper, the LLM, Piper) in a
simulated room (`voice_agent.bench.room`): a person, voiced by the project's own TTS, talks
into the microphone, and every figure is read off the audio clock, from the end of the
person's speech (its last sample above -50 dBFS) to what left the speaker.

- **latency**: end of speech -> reply audio ready / end of turn decided / first reply audio
  out, and end of turn -> reply audio ready (negative: the reply was ready before the turn was
  known to be over), with preemptive replies on and, in the same run, off (the ratio is what to
  compare); and the share of turns the turn logic judged finished (the rest waited the longer
  silence).
- **duck**: the person barges in (or says "uh-huh") while the assistant speaks. The
  assistant's voice is a steady tone here (`ToneTTS`) so that the level of what left the speaker
  can be read exactly, in 5 ms blocks: time from speech onset to the first block at least 20 dB
  down, whether it stayed down until the verdict, and the time to the verdict.
- **pauses**: sentences with a 600 ms pause in the middle ("my number is four one five ...
  two three nine"): how many were cut off at the pause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np

from voice_agent.audio.pcm import dbfs
from voice_agent.bench import Progress
from voice_agent.bench.figures import Figure
from voice_agent.bench.room import Room
from voice_agent.bench.script import (
    BACKCHANNELS,
    BARGE_INS,
    PAUSE_S,
    PAUSED,
    QUESTIONS,
    Line,
    line,
    trimmed,
)
from voice_agent.config import Settings
from voice_agent.engines import Engines, load_engines
from voice_agent.events import (
    BotStartedSpeaking,
    BotStoppedSpeaking,
    EndOfTurn,
    Event,
    PlaybackInterrupted,
    ReplyAudioReady,
    Unducked,
)
from voice_agent.frames import PCM
from voice_agent.persona import Persona, PersonaStore, Voice
from voice_agent.session import Session
from voice_agent.tasks import TaskOwner

TARGETS = {"speech end -> reply audio ready": 300.0, "onset -> ducked 20 dB": 100.0}


class ToneTTS:
    """A voice that is a steady 220 Hz tone at -12 dBFS, 120 ms per character (so a reply
    outlasts the speech over it): a measuring instrument for ducking, not a voice anyone
    hears."""

    sample_rate = 16000
    level_dbfs = -12.0

    def synthesize(self, text: str, voice: Voice) -> PCM:
        n = self.sample_rate * 120 * len(text) // 1000
        t = np.arange(n) / self.sample_rate
        amplitude = 32767 * 10 ** (self.level_dbfs / 20) * np.sqrt(2)
        pcm: PCM = (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
        return pcm


@contextlib.asynccontextmanager
async def _session(settings: Settings, persona: Persona, engines: Engines) -> AsyncIterator[Room]:
    room = Room(settings.audio.sample_rate)
    owner = TaskOwner("bench")
    async with Session(settings, persona, room, engines) as session:
        runner = owner.create_task(session.run(), "session")
        try:
            yield room
        finally:
            room.hang_up()
            session.close()
            await asyncio.wait({runner}, timeout=30)
            await owner.cancel_tasks()


async def _until(room: Room, kind: type[Event], after: int, timeout_s: float = 30) -> int | None:
    """Mic sample of the first `kind` event at or after `after`; None after `timeout_s`."""
    waited = 0.0
    while (hit := room.first_event(kind, after)) is None:
        if waited > timeout_s:
            return None
        await room.wait_ms(20)
        waited += 0.02
    return hit[0]


def _ms(samples: float, rate: int) -> float:
    return 1000.0 * samples / rate


async def bench_latency(
    settings: Settings, persona: Persona, engines: Engines, lines: list[Line], repeats: int
) -> list[Figure]:
    rate = settings.audio.sample_rate
    figures: list[Figure] = []
    for preemptive in (True, False):
        name = "preemptive" if preemptive else "not preemptive"
        s = settings.model_copy(
            update={"turns": settings.turns.model_copy(update={"preemptive_reply": preemptive})}
        )
        ready = Figure(name, "speech end -> reply audio ready", "ms")
        ended = Figure(name, "speech end -> end of turn", "ms")
        after_end = Figure(name, "end of turn -> reply audio ready", "ms")
        out = Figure(name, "speech end -> first audio out", "ms")
        finished = Figure(name, "judged finished", "share", share=True)
        async with _session(s, persona, engines) as room:
            for i in range(repeats):
                line = lines[i % len(lines)]
                said = await room.said(room.say(line.pcm))
                end = said.start + line.last
                started = await _until(room, BotStartedSpeaking, end)
                if started is None:
                    continue
                r, e = (
                    room.first_event(ReplyAudioReady, end),
                    room.first_event(EndOfTurn, end),
                )
                first = next((p.at for p in room.played if p.at >= end), None)
                if r is not None:
                    ready.samples.append(_ms(r[0] - end, rate))
                if e is not None:
                    ended.samples.append(_ms(e[0] - end, rate))
                    finished.samples.append(float(e[1].reason == "finished turn"))
                if r is not None and e is not None:
                    after_end.samples.append(_ms(r[0] - e[0], rate))
                if first is not None:
                    out.samples.append(_ms(first - end, rate))
                await _until(room, BotStoppedSpeaking, started)
                await room.wait_ms(300)
        figures += [ready, ended, after_end, out, finished]
    return figures


async def bench_duck(
    settings: Settings,
    persona: Persona,
    engines: Engines,
    question: Line,
    barge_ins: list[Line],
    backchannels: list[Line],
    repeats: int,
) -> list[Figure]:
    rate = settings.audio.sample_rate
    tone = ToneTTS()
    toned = Engines(
        asr=engines.asr,
        llm=engines.llm,
        tts={persona.voice.engine: tone},
        executor=engines.executor,
        vad=engines.vad,
        turn_model=engines.turn_model,
    )
    latency = Figure("barge-in", "onset -> ducked 20 dB", "ms")
    depth = Figure("barge-in", "duck depth", "dB")
    stayed = Figure("barge-in", "stayed down", "share", share=True)
    confirmed = Figure("barge-in", "onset -> reply stopped", "ms")
    kept = Figure("backchannel", "reply kept", "share", share=True)
    back_up = Figure("backchannel", "onset -> back to full level", "ms")
    full = tone.level_dbfs
    async with _session(settings, persona, toned) as room:
        for i in range(repeats):
            barge = i % 2 == 0
            line = (barge_ins if barge else backchannels)[i // 2 % 2]
            asked = await room.said(room.say(question.pcm))
            started = await _until(room, BotStartedSpeaking, asked.end)
            if started is None:
                continue
            await room.wait_ms(1200)
            said = await room.said(room.say(line.pcm))
            onset = said.start + line.first
            verdict_kind: type[Event] = PlaybackInterrupted if barge else Unducked
            verdict = await _until(room, verdict_kind, onset, timeout_s=10)
            blocks = _blocks(room, onset, rate)
            down = next((at for at, level in blocks if level <= full - 20), None)
            if down is not None:
                latency.samples.append(_ms(down - onset, rate))
                until = verdict if verdict is not None else said.end
                levels = [level for at, level in blocks if down <= at < until - rate // 50]
                if levels:
                    depth.samples.append(full - float(np.median(levels)))
                stayed.samples.append(float(all(level <= full - 20 for level in levels)))
            if barge and verdict is not None:
                confirmed.samples.append(_ms(verdict - onset, rate))
            stopped = await _until(room, BotStoppedSpeaking, onset, timeout_s=60)
            if not barge:
                if verdict is not None:
                    back_up.samples.append(_ms(verdict - onset, rate))
                end = room.mic if stopped is None else stopped
                cut = room.first_event(PlaybackInterrupted, onset)
                kept.samples.append(float(cut is None or cut[0] > end))
            await room.wait_ms(300)
    return [latency, depth, stayed, confirmed, back_up, kept]


def _blocks(room: Room, after: int, rate: int) -> list[tuple[int, float]]:
    """The level of what the speaker played after mic sample `after`, in 5 ms blocks."""
    n = rate // 200
    return [
        (p.at + i, dbfs(p.pcm[i : i + n]))
        for p in room.played
        if p.at >= after
        for i in range(0, len(p.pcm), n)
    ]


async def bench_pauses(
    settings: Settings,
    persona: Persona,
    engines: Engines,
    halves: list[tuple[Line, Line]],
    texts: list[tuple[str, str]],
    progress: Progress,
) -> list[Figure]:
    rate = settings.audio.sample_rate
    cut = Figure("mid-sentence pause", "cut off at the pause", "share", share=True)
    waited = Figure("mid-sentence pause", "speech end -> end of turn", "ms")
    gap = np.zeros(int(PAUSE_S * rate), np.int16)
    async with _session(settings, persona, engines) as room:
        for (first, second), (said_first, said_second) in zip(halves, texts, strict=True):
            room.say(trimmed(first, rate))
            room.say(gap)
            said = await room.said(room.say(trimmed(second, rate)))
            resumed = said.start
            end = said.end - rate // 50
            ended = await _until(room, EndOfTurn, resumed - int(PAUSE_S * rate))
            if ended is None:
                continue
            cut.samples.append(float(ended < resumed))
            if ended < resumed:
                progress(f'cut off at the pause: "{said_first} ... {said_second}"')
            final = room.first_event(EndOfTurn, end)
            if final is not None:
                waited.samples.append(_ms(final[0] - end, rate))
            await _until(room, BotStartedSpeaking, end)
            await _until(room, BotStoppedSpeaking, end)
            await room.wait_ms(300)
    return [cut, waited]


async def run(settings: Settings, repeats: int, progress: Progress) -> list[Figure]:
    """The three parts above, in one run; returns the figures."""
    progress("loading the engines")
    engines = load_engines(settings, tts=("piper",))
    persona = PersonaStore(settings.personas.dirs).get(settings.personas.default)
    rate = settings.audio.sample_rate
    try:
        voice = engines.tts["piper"]
        progress("voicing the script")
        questions = [line(voice, q, rate) for q in QUESTIONS]
        halves = [(line(voice, a, rate), line(voice, b, rate)) for a, b in PAUSED]
        barge_ins = [line(voice, t, rate) for t in BARGE_INS]
        backchannels = [line(voice, t, rate) for t in BACKCHANNELS]
        progress(f"latency: {repeats} turns with preemptive replies, {repeats} without")
        figures = await bench_latency(settings, persona, engines, questions, repeats)
        progress(f"duck: {repeats} barge-ins and backchannels")
        figures += await bench_duck(
            settings, persona, engines, questions[0], barge_ins, backchannels, repeats
        )
        progress(f"pauses: {len(halves)} sentences with a {PAUSE_S:g} s pause inside")
        figures += await bench_pauses(settings, persona, engines, halves, PAUSED, progress)
    finally:
        engines.close()
    for f in figures:
        f.target = TARGETS.get(f.metric) if f.engine != "not preemptive" else None
    return figures
