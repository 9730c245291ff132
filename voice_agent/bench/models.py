"""`voice-agent bench models`: how fast each embedded engine is on this machine.

ASR: final-transcript latency after the end of a ~3 s utterance (with partials running as in
a session) and the real-time factor of a full decode. LLM: load time, first-token latency and
tokens per second, for every LLM of the catalog that is installed, with the configured engine;
for the default (`llama-server`) also under concurrent load (`llm_load`), and the in-process
`llama-cpp` engine beside it where it is installed. TTS: first-chunk latency
(a short clause) and real-time factor. Each figure is a median and p95 over repeated runs;
speech for the ASR is made by the project's own TTS.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from voice_agent.audio.pcm import resample
from voice_agent.backbone.base import ASREngine, GenerationParams, TTSEngine
from voice_agent.bench import Progress, llm_load
from voice_agent.bench.figures import Figure
from voice_agent.config import Settings
from voice_agent.engines import load_asr, load_llm, load_tts
from voice_agent.history import History
from voice_agent.modelfiles import ModelStore, installed
from voice_agent.modes import transcribe
from voice_agent.persona import PersonaStore, Voice

CLAUSES = [
    "Sure, I can help.",
    "It is sunny today.",
    "Good morning to you.",
    "That depends, though.",
    "Let me check that.",
]
UTTERANCES = [  # about three seconds each when spoken
    "What is the weather going to be like tomorrow in Paris?",
    "Can you remind me to call my sister at six tonight?",
    "How many minutes should I boil an egg for breakfast?",
    "Please tell me a short joke about a very clever cat.",
]
QUESTIONS = [
    "What's a good name for a black cat?",
    "How do I keep basil fresh?",
    "Can you suggest a quick dinner idea?",
    "Why do leaves change colour in autumn?",
    "What should I pack for a weekend hike?",
]
TARGETS = {"asr final": 250.0, "llm first token": 150.0, "tts first chunk": 60.0}
LOCAL_LLM_ENGINES = ("llama-server", "llama-cpp")


def _ms(t: float) -> float:
    return 1000 * (time.perf_counter() - t)


def bench_tts(name: str, tts: TTSEngine, voice: Voice, repeats: int) -> list[Figure]:
    first = Figure(name, "tts first chunk", "ms")
    rtf = Figure(name, "tts rtf", "x")
    tts.synthesize(CLAUSES[0], voice)  # warm-up
    for i in range(repeats):
        t = time.perf_counter()
        tts.synthesize(CLAUSES[i % len(CLAUSES)], voice)
        first.samples.append(_ms(t))
        t = time.perf_counter()
        pcm = tts.synthesize(UTTERANCES[i % len(UTTERANCES)], voice)
        rtf.samples.append((time.perf_counter() - t) / (len(pcm) / tts.sample_rate))
    return [first, rtf]


def bench_asr(
    settings: Settings, store: ModelStore, speech: list[np.ndarray], repeats: int
) -> tuple[list[Figure], ASREngine]:
    """Load, final transcript and real-time factor of one utterance at a time; and each call's
    time when two sessions' finals come at once (CTranslate2 runs them in parallel with as many
    `num_workers` as the engine pool has threads, as the server loads it). Also the engine,
    loaded as the server loads it, for the benchmarks after."""
    s = settings.engines.asr
    t = time.perf_counter()
    asr = load_asr(s, store, workers=settings.engines.executor.workers)
    load = Figure(s.model, "asr load", "ms", [_ms(t)])
    final = Figure(s.model, "asr final", "ms")
    rtf = Figure(s.model, "asr rtf", "x")
    alone = Figure(s.model, "asr whole utterance, 1 at once", "ms")
    transcribe(asr, speech[0])  # warm-up
    for i in range(repeats):
        pcm = speech[i % len(speech)]
        final.samples.append(
            transcribe(asr, pcm, partial_interval_ms=s.partial_interval_ms).final_ms
        )
        whole = transcribe(asr, pcm)
        rtf.samples.append(whole.final_ms / 1000 / whole.audio_s)
        alone.samples.append(whole.final_ms)
    both = Figure(s.model, "asr whole utterance, 2 at once", "ms")
    with ThreadPoolExecutor(2) as pool:
        for i in range(repeats):
            pair = (speech[i % len(speech)], speech[(i + 1) % len(speech)])
            both.samples += [r.final_ms for r in pool.map(lambda p: transcribe(asr, p), pair)]
    return [load, final, rtf, alone, both], asr


def bench_llm(
    settings: Settings,
    store: ModelStore,
    model_id: str,
    repeats: int,
    engine: str,
    beside: Sequence[Callable[[], object]] = (),
) -> list[Figure]:
    """Load time, first token and tokens per second of one reply at a time; with an engine
    that serves several at once, also the figures of `llm_load` (under concurrent load, and
    beside the calls of `beside`)."""
    s = settings.engines.llm.model_copy(update={"model": model_id, "engine": engine})
    name = model_id if engine == settings.engines.llm.engine else f"{model_id} ({engine})"
    t = time.perf_counter()
    llm = load_llm(s, store)
    load = Figure(name, "llm load", "ms", [_ms(t)])
    first = Figure(name, "llm first token", "ms")
    rate = Figure(name, "llm tokens/s", "tok/s")
    persona = PersonaStore([]).get(settings.personas.default)
    params = GenerationParams(
        s.max_tokens, s.temperature, s.top_p, s.repeat_penalty, conversation="bench"
    )
    budget = s.context_tokens - s.max_tokens
    try:
        for i in range(repeats + 1):
            history = History()
            history.add_user(QUESTIONS[i % len(QUESTIONS)])
            t = time.perf_counter()
            pieces, t_first = 0, 0.0
            for _ in llm.stream(history.prompt(persona, budget), params):
                pieces += 1
                if pieces == 1:
                    t_first = _ms(t)
            if i == 0:
                continue  # warm-up
            first.samples.append(t_first)
            if pieces > 1:
                rate.samples.append((pieces - 1) / ((_ms(t) - t_first) / 1000))
        figures = [load, first, rate]
        if hasattr(llm, "astream"):
            figures += llm_load.run(llm, name, persona, QUESTIONS, repeats, budget, beside)
        return figures
    finally:
        close = getattr(llm, "close", None)
        if close is not None:
            close()


def run(settings: Settings, repeats: int = 20, progress: Progress = lambda _: None) -> list[Figure]:
    """Every benchmark above, in one run; returns the figures."""
    store = ModelStore(cache_dir=settings.engines.models_cache)
    figures: list[Figure] = []
    progress("TTS piper")
    piper = load_tts("piper", settings.engines.tts, store)
    joe = Voice(id="joe")
    figures += bench_tts("piper-joe", piper, joe, repeats)
    if installed(store.catalog.get(settings.engines.tts.kokoro_model)):
        progress("TTS kokoro")
        kokoro = load_tts("kokoro", settings.engines.tts, store)
        figures += bench_tts("kokoro-82m", kokoro, Voice(engine="kokoro", id="jf_alpha"), repeats)
    progress("ASR")
    rate = settings.audio.sample_rate
    speech = [resample(piper.synthesize(u, joe), piper.sample_rate, rate) for u in UTTERANCES]
    asr_figures, asr = bench_asr(settings, store, speech, repeats)
    figures += asr_figures
    beside = [lambda: transcribe(asr, speech[0]), lambda: piper.synthesize(CLAUSES[0], joe)]
    engine = settings.engines.llm.engine
    for m in store.catalog.models:
        if m.role == "llm" and installed(m) and engine in LOCAL_LLM_ENGINES:
            progress(f"LLM {m.id}")
            figures += bench_llm(settings, store, m.id, max(repeats // 2, 5), engine, beside)
    if engine != "llama-cpp" and importlib.util.find_spec("llama_cpp") is not None:
        progress("LLM in this process (llama-cpp), for comparison")  # one reply at a time
        model = settings.engines.llm.model
        figures += bench_llm(settings, store, model, max(repeats // 2, 5), "llama-cpp")
    for f in figures:
        f.target = TARGETS.get(f.metric)
    return figures
