"""Streaming ASR with faster-whisper (CTranslate2 Whisper models, English-only or multilingual).

One `WhisperASR` loads the model, shared by every session; each utterance gets a `WhisperStream`
holding its audio and decoding state. Input is mono int16 PCM at 16 kHz.

How a stream decodes:
- `partial()` re-decodes the whole utterance so far and commits the words that two consecutive
  decodes agree on (LocalAgreement-2); committed words are shown first and never change.
- `finalize()` reuses the last partial's decode when no speech arrived after the audio it
  covered (the usual case: the end of a turn is detected after some silence), so the final
  costs no decode at all; otherwise it decodes the whole utterance once. The final transcript is
  the best decode of the whole utterance, so it may correct a committed word: forcing committed
  words on the decoder (as a prefix, or as the prompt of a decode of the rest of the audio) kept
  the errors Whisper makes on cut-off audio and raised the word error rate.
- The encoder sees a window of `ceil(duration) + 1` seconds, at least 10 s: Whisper is trained on
  30 s windows, but on utterances of a few seconds a 10 s window gave the same word error rate at a
  third of the cost; shorter windows made the decoder loop. Utterances longer than 29 s are
  transcribed by faster-whisper's own long-form loop at `finalize()`, and their partials stop
  growing past 29 s.
- Silence, noise and audio under 0.1 s give "": an energy gate first, then Whisper's no-speech
  probability with its average log-probability (as in faster-whisper's `transcribe`), and a
  transcript without a letter or digit (on noise, Whisper loops on ". . .").

The model is safe to call from several threads at once (CTranslate2's methods release the GIL and
queue their jobs on the model's worker); a stream serializes its own calls.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voice_agent.frames import PCM

SAMPLE_RATE = 16000
_FRAMES_PER_SECOND = 100
_MIN_SAMPLES = SAMPLE_RATE // 10
_MIN_WINDOW_S = 10
_MAX_WINDOW_S = 30
_GATE_FRAME = SAMPLE_RATE // 50
_TOKENS_PER_SECOND = 15
"""A generous bound on speech rate, so that a decoder caught in a loop stops early."""

_TAIL_RELATIVE = 0.1
Audio = npt.NDArray[np.float32]


def _loudest(audio: Audio) -> float:
    """RMS of the loudest 20 ms frame (0 for less than one frame)."""
    n = len(audio) // _GATE_FRAME * _GATE_FRAME
    if n == 0:
        return 0.0
    frames = audio[:n].reshape(-1, _GATE_FRAME)
    return float(np.sqrt(np.max(np.mean(frames * frames, axis=1))))


@dataclass(slots=True)
class _Hypothesis:
    tokens: list[int]
    no_speech: bool


@dataclass(slots=True)
class _Word:
    text: str
    tokens: list[int]

    @property
    def key(self) -> str:
        return self.text.strip().lower()


class WhisperASR:
    """A faster-whisper model shared by all sessions; `stream()` starts one utterance.

    `language` is a code such as "en", or None (or "auto") to detect it in each utterance
    (multilingual models only; English-only models always transcribe English). Audio whose
    loudest 20 ms frame is under `silence_dbfs` (dB below full scale) is silence, not decoded.
    """

    sample_rate: int = SAMPLE_RATE

    def __init__(
        self,
        model_dir: Path,
        *,
        compute_type: str = "int8",
        threads: int = 2,
        workers: int = 1,
        language: str | None = "en",
        beam_size: int = 1,
        no_speech_threshold: float = 0.6,
        log_prob_threshold: float = -1.0,
        silence_dbfs: float = -50.0,
    ) -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(
            str(model_dir),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=workers,  # calls from that many threads at once run in parallel
        )
        self.multilingual: bool = self.model.model.is_multilingual
        self.language = (None if language == "auto" else language) if self.multilingual else "en"
        self.beam_size = beam_size
        self.no_speech_threshold = no_speech_threshold
        self.log_prob_threshold = log_prob_threshold
        self.silence_rms = 32768.0 * 10 ** (silence_dbfs / 20)
        self._tokenizers: dict[str, tuple[Any, list[int]]] = {}
        self._lock = threading.Lock()

    def stream(self) -> WhisperStream:
        """A new, empty utterance."""
        return WhisperStream(self)

    def transcribe(self, pcm: PCM) -> str:
        """Transcript of a whole utterance in one decode."""
        stream = self.stream()
        stream.accept(pcm)
        return stream.finalize()

    def _tokenizer(self, language: str) -> tuple[Any, list[int]]:
        """The tokenizer for `language` and the token ids to suppress with it."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        with self._lock:
            if language not in self._tokenizers:
                tok = Tokenizer(
                    self.model.hf_tokenizer, self.multilingual, task="transcribe", language=language
                )
                self._tokenizers[language] = (tok, list(get_suppressed_tokens(tok, [-1])))
            return self._tokenizers[language]

    def _is_silent(self, audio: Audio) -> bool:
        """No 20 ms frame of `audio` (float, full scale 1.0) is louder than the silence gate."""
        return _loudest(audio) * 32768.0 < self.silence_rms

    def _is_silent_after(self, audio: Audio, start: int) -> bool:
        """Nothing after sample `start` is louder than the gate or a tenth of the loudest frame."""
        tail = _loudest(audio[start:])
        return tail * 32768.0 < self.silence_rms or tail < _TAIL_RELATIVE * _loudest(audio)

    def _decode(self, audio: Audio, language: str | None) -> tuple[_Hypothesis, str]:
        """One decode of `audio` (at most 29 s): the hypothesis, and the language it was decoded
        in (detected when `language` is None). A short window sometimes makes the decoder say
        the utterance twice ("Yes, yes."); such a result is decoded again with the full window."""
        seconds = len(audio) / SAMPLE_RATE
        window = min(_MAX_WINDOW_S, max(_MIN_WINDOW_S, math.ceil(seconds) + 1))
        hyp, language = self._decode_window(audio, language, window)
        if window < _MAX_WINDOW_S and not hyp.no_speech:
            tok, _ = self._tokenizer(language)
            if _ends_repeated(tok.decode(hyp.tokens)):
                hyp, language = self._decode_window(audio, language, _MAX_WINDOW_S)
        return hyp, language

    def _decode_window(
        self, audio: Audio, language: str | None, window: int
    ) -> tuple[_Hypothesis, str]:
        from faster_whisper.audio import pad_or_trim

        seconds = len(audio) / SAMPLE_RATE
        features = pad_or_trim(self.model.feature_extractor(audio), window * _FRAMES_PER_SECOND)
        encoded = self.model.encode(features)
        if language is None:
            top = self.model.model.detect_language(encoded)[0][0][0]
            language = str(top)[2:-2]
        tok, suppress = self._tokenizer(language)
        prompt = [*tok.sot_sequence, tok.no_timestamps]
        result = self.model.model.generate(
            encoded,
            [prompt],
            beam_size=self.beam_size,
            max_length=len(prompt) + int(_TOKENS_PER_SECOND * seconds) + 10,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=suppress,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tok.eot]
        # CTranslate2 scores are normalized by length; faster-whisper averages over length + 1.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        no_speech = (
            result.no_speech_prob > self.no_speech_threshold
            and avg_logprob <= self.log_prob_threshold
        ) or not any(c.isalnum() for c in tok.decode(tokens))  # noise: ". . . . ."
        return _Hypothesis(tokens, no_speech), language

    def _decode_long(self, audio: Audio, language: str | None) -> str:
        """Transcript of audio longer than one window, by faster-whisper's long-form loop."""
        segments, _ = self.model.transcribe(
            audio,
            language=language,
            beam_size=self.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=False,
            no_speech_threshold=self.no_speech_threshold,
            log_prob_threshold=self.log_prob_threshold,
        )
        text = " ".join(s.text.strip() for s in segments).strip()
        return text if any(c.isalnum() for c in text) else ""


@dataclass(slots=True)
class _State:
    committed: list[_Word] = field(default_factory=list)
    tentative: list[_Word] = field(default_factory=list)
    """The last decode's words after the committed ones."""
    decoded: list[_Word] = field(default_factory=list)
    """All words of the last decode."""
    covered: int = 0
    """Samples the last decode saw."""
    language: str | None = None


class WhisperStream:
    """The audio and decoding state of one utterance (see the module's docstring).

    `accept` may be called from another thread than `partial`/`finalize`; those two serialize.
    """

    def __init__(self, engine: WhisperASR) -> None:
        self.engine = engine
        self._chunks: list[PCM] = []
        self._chunks_lock = threading.Lock()
        self._decode_lock = threading.Lock()
        self._state = _State(language=engine.language)
        self._final: str | None = None

    def accept(self, pcm: PCM) -> None:
        """Append mono int16 PCM at 16 kHz (copied; no decoding here)."""
        if pcm.dtype != np.int16:
            raise TypeError(f"WhisperStream.accept takes int16 PCM, not {pcm.dtype}")
        chunk = pcm.reshape(-1).copy()
        with self._chunks_lock:
            self._chunks.append(chunk)

    @property
    def committed(self) -> str:
        """The committed words so far: every later partial starts with them."""
        return self._text(self._state.committed)

    @property
    def language(self) -> str | None:
        """The configured language, or the one the last decode detected (None before it)."""
        return self._state.language

    def partial(self) -> str:
        """Committed words (they never change) followed by the latest tentative words."""
        with self._decode_lock:
            if self._final is not None:
                return self._final
            state = self._state
            audio = self._audio()
            if len(audio) < _MIN_SAMPLES or self.engine._is_silent(audio):
                return self._text(state.committed)
            if len(audio) > (_MAX_WINDOW_S - 1) * SAMPLE_RATE:
                return self._text(state.committed + state.tentative)
            words = self._decode(audio)
            tail = words[_end_of(state.committed, words) :]
            agreed = 0
            # The last word sits at the edge of the audio and may be cut: never commit it.
            for old, new in zip(state.tentative, tail[:-1], strict=False):
                if old.key != new.key:
                    break
                agreed += 1
            state.committed += tail[:agreed]
            state.tentative = tail[agreed:]
            return self._text(state.committed + state.tentative)

    def finalize(self) -> str:
        """Final transcript of the utterance; later calls (and `partial`) return the same."""
        with self._decode_lock:
            if self._final is None:
                self._final = self._finish()
            return self._final

    def _finish(self) -> str:
        state, engine = self._state, self.engine
        audio = self._audio()
        if len(audio) < _MIN_SAMPLES or engine._is_silent(audio):
            return ""
        if len(audio) > (_MAX_WINDOW_S - 1) * SAMPLE_RATE:
            return engine._decode_long(audio, state.language)
        if not (state.covered and engine._is_silent_after(audio, state.covered)):
            self._decode(audio)
        return self._text(state.decoded)

    def _decode(self, audio: Audio) -> list[_Word]:
        state = self._state
        # Auto-detection goes on until words are committed; then their language stays.
        language = state.language if state.committed else self.engine.language
        hyp, state.language = self.engine._decode(audio, language)
        tok, _ = self.engine._tokenizer(state.language)
        texts, tokens = tok.split_to_word_tokens([] if hyp.no_speech else hyp.tokens)
        state.decoded = [_Word(t, ts) for t, ts in zip(texts, tokens, strict=True)]
        state.covered = len(audio)
        return state.decoded

    def _text(self, words: list[_Word]) -> str:
        if not words:
            return ""
        tok, _ = self.engine._tokenizer(self._state.language or "en")
        return str(tok.decode([t for w in words for t in w.tokens])).strip()

    def _audio(self) -> Audio:
        with self._chunks_lock:
            chunks = list(self._chunks)
        if not chunks:
            return np.zeros(0, np.float32)
        return np.concatenate(chunks).astype(np.float32) / 32768.0


def _ends_repeated(text: str) -> bool:
    """Whether the words end with a block said twice in a row ("how are you how are you")."""
    words = re.sub(r"[^\w\s']", " ", text.lower()).split()
    n = len(words)
    return any(words[n - 2 * k : n - k] == words[n - k :] for k in range(1, n // 2 + 1))


def _end_of(committed: list[_Word], words: list[_Word]) -> int:
    """Index in `words` just past where the `committed` words end, aligned word by word."""
    if not committed:
        return 0
    matcher = SequenceMatcher(None, [w.key for w in committed], [w.key for w in words], False)
    blocks = [b for b in matcher.get_matching_blocks() if b.size]
    if not blocks:
        return min(len(committed), len(words))
    last = blocks[-1]
    return min(len(words), last.b + last.size + len(committed) - (last.a + last.size))
