"""speak -> transcribe with the embedded models: the backbone understands itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.wer import wer
from voice_agent.audio.pcm import resample
from voice_agent.backbone.base import ASREngine, TTSEngine
from voice_agent.modes import speak, transcribe
from voice_agent.persona import Voice

SENTENCES = [
    "What is the weather like in Paris today?",
    "Please remind me to water the plants tomorrow morning.",
    "I would like to book a table for four people at seven.",
    "The quick brown fox jumps over the lazy dog.",
    "Can you play some quiet music while I read?",
    "My flight leaves at half past nine on Friday.",
    "How long does it take to boil an egg?",
    "She sells seashells by the seashore.",
    "Turn off the lights in the kitchen, please.",
    "What's the difference between a frog and a toad?",
    "I have three cats and two small dogs.",
    "Tell me a short story about a brave little mouse.",
    "The meeting has been moved to next Thursday afternoon.",
    "Do you know a good recipe for banana bread?",
    "It is colder today than it was yesterday.",
    "Set a timer for fifteen minutes.",
    "Where is the nearest train station from here?",
    "Thank you, that was really helpful.",
    "Could you spell the word necessary for me?",
    "Let's go for a walk in the park after lunch.",
]


@pytest.fixture()
def steady_piper(piper: TTSEngine, monkeypatch: pytest.MonkeyPatch) -> TTSEngine:
    """Piper with its sampling noise off: the same audio every run. With the noise on, this
    test's WER ranged 1.8-5.3% over six runs (median 2.9%), which no fixed bound can test."""
    monkeypatch.setattr(piper, "noise_scale", 0.0)
    monkeypatch.setattr(piper, "noise_w", 0.0)
    return piper


@pytest.mark.slow
def test_twenty_sentences_round_trip_with_a_word_error_rate_under_5_percent(
    steady_piper: TTSEngine, asr: ASREngine
) -> None:
    piper = steady_piper
    errors, total = 0.0, 0
    worst: list[tuple[float, str, str]] = []
    for sentence in SENTENCES:
        pcm = resample(speak(piper, sentence, Voice(id="joe")), piper.sample_rate, asr.sample_rate)
        heard = transcribe(asr, pcm, partial_interval_ms=400).text
        n = len(sentence.split())
        errors += wer(sentence, heard) * n
        total += n
        worst.append((wer(sentence, heard), sentence, heard))
    worst.sort(reverse=True)
    assert errors / total <= 0.05, worst[:5]


@pytest.mark.slow
def test_silence_and_noise_transcribe_to_nothing(asr: ASREngine) -> None:
    assert transcribe(asr, np.zeros(16000 * 2, np.int16)).text == ""
    assert transcribe(asr, np.zeros(100, np.int16)).text == ""
    assert transcribe(asr, np.zeros(0, np.int16)).text == ""


@pytest.mark.slow
def test_the_cli_speaks_to_a_file_and_transcribes_it_back(tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "voice_agent"]
    wav = tmp_path / "hello.wav"
    said = subprocess.run(
        [*exe, "speak", "Hello, how are you today?", "-o", str(wav)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert said.returncode == 0, said.stderr
    assert said.stdout == "" and "s of speech at 22050 Hz" in said.stderr
    heard = subprocess.run(
        [*exe, "transcribe", str(wav)], capture_output=True, text=True, timeout=120
    )
    assert heard.returncode == 0, heard.stderr
    assert wer("Hello, how are you today?", heard.stdout) <= 0.2
    assert heard.stdout.count("\n") == 1  # the transcript alone on stdout; logs went to stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["speak", "   ", "-o", "x.wav"], "nothing to say"),
        (["speak", "hi", "-o", "x.wav", "--voice", "nobody"], "unknown voice 'nobody'"),
        (["speak", "hi", "-o", "x.wav", "--persona", "nobody"], "unknown persona 'nobody'"),
        (["transcribe", "missing.wav"], "missing.wav: no such file"),
        (["transcribe", "garbage.wav"], "not a readable audio file"),
    ],
)
def test_bad_input_is_a_message_not_a_traceback(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    (tmp_path / "garbage.wav").write_bytes(b"RIFF....garbage")
    done = subprocess.run(
        [sys.executable, "-m", "voice_agent", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_speak_pipes_a_wav_into_transcribe() -> None:
    exe = [sys.executable, "-m", "voice_agent"]
    wav = subprocess.run([*exe, "speak", "Nice to meet you."], capture_output=True, timeout=120)
    assert wav.returncode == 0 and wav.stdout.startswith(b"RIFF"), wav.stderr
    heard = subprocess.run(
        [*exe, "transcribe", "-"], input=wav.stdout, capture_output=True, timeout=120
    )
    assert heard.returncode == 0, heard.stderr
    assert wer("Nice to meet you.", heard.stdout.decode()) <= 0.25
