"""Reading and writing audio files for the command line (wav, flac, ogg, mp3, raw PCM)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from voice_agent.audio.pcm import resample, to_int16
from voice_agent.frames import PCM

MAX_SECONDS = 4 * 3600
"""Longest audio read (a bound on memory: 4 h at 16 kHz is 460 MB of int16)."""


class AudioFileError(ValueError):
    """Audio that cannot be read; the message is for people."""


_CONTAINERS = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")
"""How wav, flac, ogg and mp3 streams begin."""


def read_audio(path: Path, rate: int) -> PCM:
    """Any file libsndfile reads (wav, flac, ogg, mp3...), as mono int16 at `rate`."""
    if not path.exists():
        raise AudioFileError(f"{path}: no such file")
    if path.is_dir():
        raise AudioFileError(f"{path}: is a directory")
    return _decode(str(path), str(path), rate)


def _decode(source: str | io.BytesIO, name: str, rate: int) -> PCM:
    try:
        info = sf.info(source)
        if info.frames > MAX_SECONDS * info.samplerate:
            raise AudioFileError(f"{name}: longer than {MAX_SECONDS // 3600} hours")
        if isinstance(source, io.BytesIO):
            source.seek(0)
        data, src_rate = sf.read(source, dtype="float32", always_2d=True)
    except (OSError, sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioFileError(
            f"{name}: not a readable audio file (wav, flac, ogg and mp3 are supported): {exc}"
        ) from None
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return resample(to_int16(mono), int(src_rate), rate)


def read_stdin(stream: BinaryIO, raw_rate: int, rate: int) -> PCM:
    """An audio file (wav, flac, ogg, mp3) piped in, or else raw 16-bit little-endian mono PCM
    at `raw_rate`; as int16 at `rate`."""
    if not 8000 <= raw_rate <= 192_000:
        raise AudioFileError(f"raw PCM rate {raw_rate} Hz is not between 8000 and 192000")
    limit = MAX_SECONDS * raw_rate * 2
    data = stream.read(limit + 2)
    if len(data) > limit:
        raise AudioFileError(f"input longer than {MAX_SECONDS // 3600} hours")
    if data.startswith(_CONTAINERS):
        return _decode(io.BytesIO(data), "stdin", rate)
    if len(data) % 2:
        raise AudioFileError(
            f"raw PCM has an odd number of bytes ({len(data)}): expected 16-bit samples"
        )
    return resample(np.frombuffer(data, dtype="<i2").astype(np.int16), raw_rate, rate)


def wav_bytes(pcm: PCM, rate: int) -> bytes:
    """A 16-bit mono WAV file in memory."""
    buf = io.BytesIO()
    sf.write(buf, pcm, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_wav(path: Path, pcm: PCM, rate: int) -> None:
    """Write a 16-bit mono WAV file (atomically: a partial file never replaces a good one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(wav_bytes(pcm, rate))
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AudioFileError(f"{path}: cannot write: {exc.strerror or exc}") from None
