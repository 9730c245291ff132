"""The benches' script: what the simulated people say, spoken by the project's own TTS.

Questions, sentences with a pause in the middle, interruptions and backchannels, each turned
into audio with `line()`, which also finds where the sound in it begins and ends (the figures
are measured from those samples). `voice_script` voices all of it for the benches that talk to
a server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from voice_agent.audio.pcm import audible, resample
from voice_agent.backbone.base import TTSEngine
from voice_agent.bench import Progress
from voice_agent.config import Settings
from voice_agent.engines import load_tts
from voice_agent.frames import PCM
from voice_agent.modelfiles import ModelStore
from voice_agent.persona import Voice

QUESTIONS = [
    "What is a good name for a black cat?",
    "How do I keep basil fresh?",
    "Can you suggest a quick dinner idea?",
    "Why do leaves change colour in autumn?",
    "What should I pack for a weekend hike?",
    "How long should I boil an egg?",
]
PAUSED = [
    ("My phone number is four one five", "two three nine, eight eight."),
    ("I would like to order a", "large pizza with mushrooms."),
    ("Can you tell me about the", "history of Rome?"),
    ("So what I was thinking is that we could", "go to the beach on Saturday."),
    ("Remind me to call", "my sister at six."),
    ("The meeting is on", "Tuesday at ten."),
]
LONG_ASKS = [  # replies long enough to talk over
    "Tell me a long story about a fox who wanted to fly.",
    "Describe a slow walk through an old city in spring.",
]
BARGE_INS = ["Wait, stop. What about London instead?", "Hold on, that is not what I asked."]
BACKCHANNELS = ["Uh-huh.", "Yeah.", "Mm-hmm."]
PAUSE_S = 0.6
RATE = 16000
"""The rate `voice_script` speaks at."""


@dataclass(slots=True)
class Line:
    pcm: PCM
    first: int
    """First audible sample."""
    last: int
    """Last audible sample."""


def line(tts: TTSEngine, text: str, rate: int) -> Line:
    """`text` spoken by the joe voice at `rate`, with where its sound begins and ends."""
    pcm = resample(tts.synthesize(text, Voice(id="joe")), tts.sample_rate, rate)
    first, end = audible(pcm)
    return Line(pcm, first, end - 1)


def trimmed(line: Line, rate: int) -> PCM:
    """The audible part of a line, with 20 ms either side."""
    pad = rate // 50
    return line.pcm[max(0, line.first - pad) : line.last + pad]


@dataclass(slots=True)
class Lines:
    """Every line of the script, voiced."""

    questions: list[Line]
    halves: list[tuple[Line, Line]]
    asks: list[Line]
    barge_ins: list[Line]
    backchannels: list[Line]


def _voice_script(settings: Settings) -> Lines:
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


async def voice_script(settings: Settings, progress: Progress) -> Lines:
    """Every line of the script, spoken by the project's own Piper voice (in a thread: loading
    and running the TTS takes a while)."""
    progress("voicing the script with the project's TTS")
    return await asyncio.to_thread(_voice_script, settings)
