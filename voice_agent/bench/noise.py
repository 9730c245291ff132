"""`voice-agent bench noise`: what noise does to listening, with noise suppression off and on.

The script's people (questions, commands and statements, each said by several voices: Piper's
joe and, with the `kokoro` extra, two Kokoro voices) talk in noise: *stationary* (white noise)
or *babble* (eight talkers saying other sentences, summed: three Kokoro voices the utterances
do not use, and joe sped up), mixed at an SNR of 20, 10 and 5 dB computed on active speech
(20 ms frames within 40 dB of the loudest), and without noise. Each condition runs through the
session's own listening stages, with the real models: [noise suppression] -> VAD -> Whisper
ASR -> turn-taking, once per suppression level compared (by default `off` and
`audio.noise_suppression`, or `high` if that is off), and reports:

- **WER**: word error rate of the final transcripts of the stretches of speech that overlap the
  utterances, joined, against the utterances said, through the VAD and the ASR as a session
  runs them (speech the VAD clips or misses counts, and so do the noise's words that a stretch
  heard around an utterance);
- **false turn starts**: stretches of speech the VAD found starting in noise alone (the 2 s
  before each utterance), which start a turn; and the words the ASR heard in those that ended
  before the utterance (what the assistant would answer). A stretch that starts in the noise
  and runs into the utterance counts as a false start, and its words as what was heard of the
  utterance (its WER counts the noise's words as insertions);
- **false barge-ins**: 3 s stretches of noise alone while the assistant speaks, in which the
  turn logic confirmed an interruption (the reply would stop for nothing).

The audio is fed as fast as the models take it, not in real time: the VAD and turn-taking
count time in samples, so their decisions are the same, except that partial transcripts
arrive later in the audio than they would live (a barge-in is judged by its final instead).
Barge-ins come from the turn stage told the assistant is speaking (`BotStartedSpeakingFrame`),
without playback or echo. Not measured here: WebRTC's Opus codec, the browser's own noise
suppression.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast, get_args

import numpy as np

from voice_agent.audio.noise import noise_stage
from voice_agent.audio.pcm import resample
from voice_agent.audio.vad import VADStage, VoiceActivity, vad_factory
from voice_agent.backbone.base import ASREngine, TTSEngine
from voice_agent.backbone.stages import ASRStage
from voice_agent.backbone.tts_piper import PiperTTS
from voice_agent.bench import Progress
from voice_agent.bench.wer import wer, words
from voice_agent.config import NoiseLevel, Settings
from voice_agent.engines import load_asr, load_tts
from voice_agent.events import (
    Event,
    InterruptionConfirmed,
    Transcript,
    UserStartedSpeaking,
    UserStoppedSpeaking,
)
from voice_agent.executor import EngineExecutor
from voice_agent.frames import (
    PCM,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndFrame,
    InputAudioFrame,
)
from voice_agent.modelfiles import ModelStore
from voice_agent.persona import PersonaStore, Voice
from voice_agent.pipeline import UP, Pipeline, Stage
from voice_agent.session import PREROLL_MARGIN_MS
from voice_agent.turns import TurnPolicy, TurnStage

RATE = 16000
FRAME = RATE // 50
SENTENCES = [
    "What is the weather going to be like tomorrow in Paris?",
    "Turn off the lights in the kitchen.",
    "I think the blue one looks better than the red one.",
    "How many minutes should I boil an egg for breakfast?",
    "Set a timer for twenty minutes.",
    "My train leaves at half past eight from the central station.",
    "Why do leaves change colour in autumn?",
    "Please add milk and two lemons to my shopping list.",
    "We had a lovely walk along the river yesterday.",
    "Can you remind me to call my sister at six tonight?",
    "Play some quiet music for the next hour.",
    "The meeting with the new client went really well.",
]
BABBLE = [  # other people's words: none of them is in SENTENCES
    "The museum opens at nine on weekdays and ten on Sundays.",
    "She bought three apples and a loaf of bread.",
    "We should paint the fence before the rain comes.",
    "He forgot his umbrella at the office again.",
    "The children played football in the park all afternoon.",
    "Our neighbours are moving to a bigger house in June.",
    "I never know which bus goes to the harbour.",
    "That restaurant serves the best soup in town.",
]
VOICES = [
    Voice(id="joe"),
    Voice(engine="kokoro", id="jf_alpha"),
    Voice(engine="kokoro", id="jm_kumo"),
]
BABBLE_VOICES = [
    Voice(engine="kokoro", id="jf_nezumi"),
    Voice(engine="kokoro", id="jf_tebukuro"),
    Voice(engine="kokoro", id="jf_gongitsune"),
    Voice(id="joe", speed=1.2),
]
BABBLE_TALKERS = 8
"""Talkers summed into babble: fewer are voices one can follow (and the VAD rightly does)."""
NOISES = ("stationary", "babble")
SNRS = (20, 10, 5)
LEAD_S = 2.0
"""Noise alone before each utterance: where false turn starts are counted."""
TAIL_S = 1.0
BARGE_S = 3.0
"""Noise alone while the assistant speaks, per false barge-in trial."""
BARGE_GAP_S = 1.0
DEFAULT_ON: NoiseLevel = "high"
"""The level compared with `off` when the settings have suppression off."""


@dataclass(slots=True)
class Utterance:
    text: str
    voice: str
    pcm: PCM


@dataclass(slots=True)
class Script:
    utterances: list[Utterance]
    babble: list[PCM]
    """Each babble talker's speech, concatenated."""
    barge_trials: int


@dataclass(slots=True)
class Scene:
    """One condition's audio, with what is where (in samples)."""

    audio: PCM
    utterances: list[tuple[int, int, str]] = field(default_factory=list)
    leads: list[tuple[int, int]] = field(default_factory=list)
    barges: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class Outcome:
    """One condition, suppression off or on."""

    noise: str
    snr_db: float | None
    suppression: str
    errors: float = 0.0
    ref_words: int = 0
    false_starts: int = 0
    noise_s: float = 0.0
    false_words: int = 0
    barge_ins: int = 0
    barge_trials: int = 0
    ns_cpu_ms_per_s: float = float("nan")
    transcripts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def condition(self) -> str:
        return "clean" if self.snr_db is None else f"{self.noise} {self.snr_db:g} dB"

    @property
    def wer(self) -> float:
        return self.errors / max(1, self.ref_words)

    def as_json(self) -> dict[str, Any]:
        return {
            "noise": self.noise,
            "snr_db": self.snr_db,
            "suppression": self.suppression,
            "wer": round(self.wer, 4),
            "ref_words": self.ref_words,
            "false_starts": self.false_starts,
            "noise_alone_s": round(self.noise_s, 1),
            "false_start_words": self.false_words,
            "false_barge_ins": self.barge_ins,
            "barge_trials": self.barge_trials,
            "ns_cpu_ms_per_s": round(self.ns_cpu_ms_per_s, 3),
            "transcripts": [{"said": a, "heard": b} for a, b in self.transcripts],
        }


# --- the audio ---------------------------------------------------------------------------------


def active_power(pcm: np.ndarray) -> float:
    """Mean power of the 20 ms frames within 40 dB of the loudest (speech, not its pauses)."""
    x = np.asarray(pcm, np.float64)
    frames = x[: len(x) // FRAME * FRAME].reshape(-1, FRAME)
    power = (frames**2).mean(axis=1)
    return float(power[power >= power.max() * 1e-4].mean()) if len(power) else 0.0


def noise(kind: str, n: int, babble: Sequence[PCM], rng: np.random.Generator) -> np.ndarray:
    """`n` samples of `kind` noise at an arbitrary level (float)."""
    if kind == "stationary":
        return rng.standard_normal(n)
    if kind != "babble" or not babble:
        raise ValueError(f"unknown noise {kind!r}")
    out = np.zeros(n)
    for k in range(BABBLE_TALKERS):  # a voice at another offset says other sentences
        talker = babble[k % len(babble)]
        x = np.resize(np.asarray(talker, np.float64), n)
        out += np.roll(x, int(rng.integers(0, n))) / np.sqrt(active_power(talker))
    return out


def scene(script: Script, kind: str, snr_db: float | None, rng: np.random.Generator) -> Scene:
    """The condition's audio: for each utterance, noise alone then the utterance in noise;
    then the barge-in trials (noise alone); noise throughout at `snr_db` below the speech."""
    speech: list[np.ndarray] = []
    s = Scene(np.zeros(0, np.int16))
    at = 0

    def add(x: np.ndarray) -> tuple[int, int]:
        nonlocal at
        speech.append(x)
        at += len(x)
        return at - len(x), at

    for u in script.utterances:
        s.leads.append(add(np.zeros(int(LEAD_S * RATE))))
        start, end = add(u.pcm.astype(np.float64))
        s.utterances.append((start, end, u.text))
        add(np.zeros(int(TAIL_S * RATE)))
    for _ in range(script.barge_trials):
        s.barges.append(add(np.zeros(int(BARGE_S * RATE))))
        add(np.zeros(int(BARGE_GAP_S * RATE)))
    track = np.concatenate(speech)
    if snr_db is not None:
        n = noise(kind, len(track), script.babble, rng)
        level = active_power(np.concatenate([u.pcm for u in script.utterances]))
        n *= np.sqrt(level / (np.mean(n**2) * 10 ** (snr_db / 10)))
        track = track + n
    s.audio = np.clip(np.round(track), -32768, 32767).astype(np.int16)
    return s


def voice_script(settings: Settings, quick: bool, progress: Progress) -> Script:
    """The utterances and the babble, spoken by the project's TTS (Kokoro's voices if the
    `kokoro` extra is installed, else joe alone)."""
    store = ModelStore(cache_dir=settings.engines.models_cache)
    piper = load_tts("piper", settings.engines.tts, store)
    if isinstance(piper, PiperTTS):  # the same audio in every run
        piper.noise_scale = piper.noise_w = 0.0
    engines: dict[str, TTSEngine] = {"piper": piper}
    try:
        engines["kokoro"] = load_tts("kokoro", settings.engines.tts, store)
    except Exception as exc:
        progress(f"Kokoro is not installed ({exc}): joe speaks alone, and babbles")
    voices = [v for v in VOICES if v.engine in engines]
    talkers = [v for v in BABBLE_VOICES if v.engine in engines] or [Voice(id="joe")]
    if quick:
        voices, talkers = voices[:2], talkers[:3]
    sentences = SENTENCES[:6] if quick else SENTENCES
    said = [(text, v) for text in sentences for v in voices]
    progress(f"voicing {len(said)} utterances and the babble")

    def say(text: str, voice: Voice) -> PCM:
        tts = engines[voice.engine]
        return resample(tts.synthesize(text, voice), tts.sample_rate, RATE)

    utterances = [Utterance(text, v.voice_ids[0], say(text, v)) for text, v in said]
    per = max(2, len(BABBLE) // len(talkers))
    babble = [
        np.concatenate([say(BABBLE[(i * per + j) % len(BABBLE)], v) for j in range(per)])
        for i, v in enumerate(talkers)
    ]
    return Script(utterances, babble, barge_trials=4 if quick else 8)


# --- the listening stages ------------------------------------------------------------------------


@dataclass(slots=True)
class Listeners:
    """What the bench's pipelines share: the ASR, the VAD's model, the engine pool."""

    asr: ASREngine
    vad: Callable[[], VoiceActivity]
    executor: EngineExecutor
    policy: TurnPolicy
    """The default persona's turn-taking."""


async def listen(
    settings: Settings, listeners: Listeners, s: Scene, level: NoiseLevel
) -> tuple[list[Event], float]:
    """Run one scene through [suppression] -> VAD -> ASR -> turns; its events (in order), and
    the suppressor's CPU ms per second of audio (nan when off)."""
    a = settings.audio
    lane = listeners.executor.lane(f"noise-{level}")
    suppress = noise_stage(level, a.noise_suppression_asr, a.sample_rate)
    turns = TurnStage(listeners.policy, lane, None, a.sample_rate)
    stages: list[Stage] = [
        *([suppress] if suppress is not None else []),
        VADStage(listeners.vad(), a.sample_rate),
        ASRStage(
            listeners.asr,
            lane,
            settings.engines.asr.partial_interval_ms,
            preroll_ms=settings.vad.start_ms + PREROLL_MARGIN_MS,
            max_stretch_ms=round(1000 * a.max_turn_s),
        ),
        turns,
    ]
    events: list[Event] = []
    pipeline = Pipeline(stages, events=events.append)
    await pipeline.start(a.sample_rate)
    try:
        fed = 0
        for begin, end in s.barges:
            fed = await _feed(pipeline, s.audio, fed, begin, events)
            pipeline.queue(BotStartedSpeakingFrame(), UP)
            fed = await _feed(pipeline, s.audio, fed, end, events)
            pipeline.queue(BotStoppedSpeakingFrame(), UP)
        await _feed(pipeline, s.audio, fed, len(s.audio), events)
        pipeline.queue(EndFrame())
        async with asyncio.timeout(60):
            await pipeline.wait_ended()
    finally:
        await pipeline.stop()
        lane.close()
    cost = suppress.suppressor.cpu_ms_per_s if suppress is not None else float("nan")
    return events, cost


async def _feed(pipeline: Pipeline, audio: PCM, start: int, end: int, events: list[Event]) -> int:
    """Feed audio from `start` on, in 20 ms frames, up to `end` or just past it, as fast as
    the stages take it; then wait until every stretch of speech that has paused has its final
    transcript. Returns where the next frame begins."""
    at = start
    while at < min(end, len(audio)):
        pipeline.queue(InputAudioFrame(pcm=audio[at : at + FRAME], sample_rate=RATE))
        at += FRAME
        await asyncio.sleep(0)
    async with asyncio.timeout(60):
        while True:
            await asyncio.sleep(0.02)  # (the last frames reach the end of the stages)
            stops = sum(isinstance(e, UserStoppedSpeaking) for e in events)
            finals = sum(isinstance(e, Transcript) and e.final for e in events)
            if finals >= stops:
                return at


def judge(s: Scene, events: list[Event], outcome: Outcome) -> Outcome:
    """Pair each stretch of speech (its start and its end) with its final transcript, in
    order, and place it: a stretch that overlaps an utterance is what was heard of it (with
    whatever noise it heard around it); one that starts in noise alone is a false start (its
    words counted when it overlaps no utterance); confirmed interruptions are false
    barge-ins (only noise plays while the assistant speaks)."""
    starts = [e.audio_ms * RATE // 1000 for e in events if isinstance(e, UserStartedSpeaking)]
    stops = [e.audio_ms * RATE // 1000 for e in events if isinstance(e, UserStoppedSpeaking)]
    finals = [e.text for e in events if isinstance(e, Transcript) and e.role == "user" and e.final]
    heard: list[list[str]] = [[] for _ in s.utterances]
    margin = RATE * 3 // 10  # the VAD places an onset up to a window or two early
    for start, stop, text in zip(starts, stops, finals, strict=False):
        overlapped = [
            k for k, (b, e, _) in enumerate(s.utterances) if start < e and stop > b - margin
        ]
        for k in overlapped[:1]:
            heard[k].append(text)
        if any(b <= start < e - margin for b, e in s.leads):
            outcome.false_starts += 1
            if not overlapped:
                outcome.false_words += len(words(text))
    outcome.noise_s = sum(e - b for b, e in s.leads) / RATE
    said = " ".join(text for _, _, text in s.utterances)
    outcome.ref_words = len(words(said))
    # over the whole: a stretch that runs over several utterances is not misattributed
    outcome.errors = wer(said, " ".join(" ".join(texts) for texts in heard)) * outcome.ref_words
    outcome.transcripts = [
        (u[2], " ".join(texts)) for u, texts in zip(s.utterances, heard, strict=True)
    ]
    outcome.barge_trials = len(s.barges)
    outcome.barge_ins = sum(isinstance(e, InterruptionConfirmed) for e in events)
    return outcome


def levels_of(settings: Settings, text: str | None) -> list[NoiseLevel]:
    """`--suppression`: a comma-separated list of levels; by default `off` and the setting's
    level (`high` when the setting is off). ValueError for an unknown level."""
    if text is None:
        on = settings.audio.noise_suppression
        return ["off", DEFAULT_ON if on == "off" else on]
    known = get_args(NoiseLevel)
    levels = [part.strip() for part in text.split(",") if part.strip()]
    bad = [level for level in levels if level not in known]
    if bad or not levels:
        raise ValueError(f"--suppression takes levels among {', '.join(known)}, not {text!r}")
    return [cast(NoiseLevel, level) for level in levels]


async def run(
    settings: Settings,
    quick: bool,
    progress: Progress,
    levels: Sequence[NoiseLevel] = ("off", DEFAULT_ON),
    seed: int = 7,
) -> list[Outcome]:
    """Every condition at each suppression level; the outcomes in order."""
    script = await asyncio.to_thread(voice_script, settings, quick, progress)
    progress("loading the ASR and the VAD")
    store = ModelStore(cache_dir=settings.engines.models_cache)
    e = settings.engines
    personas = PersonaStore(settings.personas.dirs)
    persona = await asyncio.to_thread(personas.get, settings.personas.default)
    listeners = Listeners(
        asr=await asyncio.to_thread(load_asr, e.asr, store, e.executor.workers),
        vad=await asyncio.to_thread(vad_factory, settings.vad, store),
        executor=EngineExecutor(e.executor.workers, e.executor.max_pending, 60.0),
        policy=TurnPolicy.of(settings, persona),
    )
    conditions: list[tuple[str, float | None]] = [("none", None)]
    conditions += [(kind, snr) for kind in NOISES for snr in (SNRS[1:2] if quick else SNRS)]
    outcomes = []
    try:
        for kind, snr in conditions:
            rng = np.random.default_rng(seed)
            s = scene(script, kind, snr, rng)
            for level in levels:
                t = time.perf_counter()
                events, cost = await listen(settings, listeners, s, level)
                o = judge(s, events, Outcome(kind, snr, level, ns_cpu_ms_per_s=cost))
                outcomes.append(o)
                progress(
                    f"{o.condition}, suppression {level}: WER {100 * o.wer:.1f} %, "
                    f"{o.false_starts} false starts, {o.barge_ins} false barge-ins "
                    f"({time.perf_counter() - t:.0f} s)"
                )
    finally:
        listeners.executor.shutdown()
        close = getattr(listeners.asr, "close", None)
        if close is not None:
            close()
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    """One line per condition and suppression level."""
    lines = [
        f"{'condition':<18} {'suppression':<11} {'WER %':>6} {'false starts':>13} "
        f"{'their words':>12} {'false barge-ins':>16}"
    ]
    for o in outcomes:
        lines.append(
            f"{o.condition:<18} {o.suppression:<11} {100 * o.wer:>6.1f} {o.false_starts:>13} "
            f"{o.false_words:>12} {o.barge_ins:>9} of {o.barge_trials:<3}"
        )
    noise_s = outcomes[0].noise_s if outcomes else 0.0
    words_ = outcomes[0].ref_words if outcomes else 0
    cost = [o.ns_cpu_ms_per_s for o in outcomes if o.suppression != "off"]
    lines.append(
        f"(per condition: {words_} words said, {noise_s:g} s of noise alone for false starts; "
        f"suppression cost: {float(np.median(cost)) if cost else float('nan'):.2f} ms of CPU "
        "per second of audio)"
    )
    return "\n".join(lines)
