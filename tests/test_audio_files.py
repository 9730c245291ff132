"""Reading audio for `transcribe`: every supported format, and clear errors for the rest."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voice_agent.audio.files import AudioFileError, read_audio, read_stdin, wav_bytes, write_wav


def tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.5 * np.sin(2 * np.pi * 440 * t)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


@pytest.mark.parametrize(
    ("fmt", "rate", "channels"),
    [("WAV", 44100, 2), ("FLAC", 16000, 1), ("OGG", 48000, 1), ("MP3", 44100, 2)],
)
def test_supported_formats_become_mono_int16_at_the_pipeline_rate(
    tmp_path: Path, fmt: str, rate: int, channels: int
) -> None:
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, tone(rate, 1.0, channels), rate, format=fmt)
    pcm = read_audio(path, 16000)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert abs(len(pcm) - 16000) < 1200  # mp3 pads a little
    rms = np.sqrt(np.mean((pcm[2000:-2000].astype(np.float64) / 32768) ** 2))
    assert 0.3 < rms < 0.4  # a 0.5 sine has an RMS of 0.354: level kept through resampling


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not audio at all", "not a readable audio file"), (b"", "not a readable audio file")],
)
def test_garbage_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFileError, match=message):
        read_audio(path, 16000)


def test_missing_files_and_directories_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="no such file"):
        read_audio(tmp_path / "nope.wav", 16000)
    with pytest.raises(AudioFileError, match="is a directory"):
        read_audio(tmp_path, 16000)


def test_truncated_wav_reads_what_is_there_or_fails_clearly(tmp_path: Path) -> None:
    data = wav_bytes((tone(16000, 1.0) * 32767).astype(np.int16), 16000)
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: len(data) // 2])
    try:
        pcm = read_audio(path, 16000)
    except AudioFileError as exc:
        assert "not a readable audio file" in str(exc)
    else:
        assert 0 < len(pcm) <= 16000


def test_raw_pcm_from_stdin() -> None:
    samples = (np.arange(800) % 100).astype("<i2")
    assert np.array_equal(read_stdin(io.BytesIO(samples.tobytes()), 16000, 16000), samples)
    assert len(read_stdin(io.BytesIO(np.zeros(4800, "<i2").tobytes()), 48000, 16000)) == 1600
    with pytest.raises(AudioFileError, match="odd number of bytes"):
        read_stdin(io.BytesIO(b"\x00\x01\x02"), 16000, 16000)
    with pytest.raises(AudioFileError, match="not between 8000 and 192000"):
        read_stdin(io.BytesIO(b""), 10, 16000)
    assert len(read_stdin(io.BytesIO(b""), 16000, 16000)) == 0


def test_an_audio_file_piped_to_stdin_is_recognised() -> None:
    pcm = (tone(22050, 0.5) * 20000).astype(np.int16)
    back = read_stdin(io.BytesIO(wav_bytes(pcm, 22050)), 16000, 16000)
    assert len(back) == 8000  # read as a 22.05 kHz WAV, not as raw samples at 16 kHz
    flac = io.BytesIO()
    sf.write(flac, pcm, 22050, format="FLAC")
    assert len(read_stdin(io.BytesIO(flac.getvalue()), 16000, 16000)) == 8000
    with pytest.raises(AudioFileError, match="stdin: not a readable audio file"):
        read_stdin(io.BytesIO(b"RIFF" + b"\x00" * 40), 16000, 16000)


def test_write_wav_round_trips_and_never_leaves_a_partial_file(tmp_path: Path) -> None:
    pcm = (tone(22050, 0.5) * 20000).astype(np.int16)
    out = tmp_path / "out.wav"
    write_wav(out, pcm, 22050)
    back, rate = sf.read(out, dtype="int16")
    assert rate == 22050 and np.array_equal(back, pcm)
    with pytest.raises(AudioFileError, match="cannot write"):
        write_wav(tmp_path / "missing-dir" / "x.wav", pcm, 22050)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]
