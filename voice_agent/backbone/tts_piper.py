"""Piper (VITS) text to speech through onnxruntime: fast on a CPU, one voice per model file.

Text becomes espeak-ng IPA (`voice_agent.backbone.phonemize`), each IPA character becomes the
ids the voice's ``phoneme_id_map`` gives it, framed as Piper expects: "^", then every phoneme
followed by the pad "_", then "$". Text is spoken sentence by sentence, so a long text costs
memory in proportion to its longest sentence, and sentences are joined by a short pause.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from voice_agent.audio.pcm import to_int16
from voice_agent.backbone.phonemize import phonemize
from voice_agent.backbone.text import split_sentences
from voice_agent.frames import PCM
from voice_agent.persona import Voice

MAX_SENTENCE_CHARS = 400
"""Longer sentences are cut at clause marks or between words before synthesis."""
SENTENCE_PAUSE_S = 0.15
"""Silence between two sentences of one call, at speed 1.0."""

_BOS, _EOS, _PAD = "^", "$", "_"


class PiperTTS:
    """A Piper voice: ``model`` is its .onnx file, ``config`` the .onnx.json beside it.

    Thread-safe: concurrent `synthesize` calls share the onnxruntime session (whose `run` is
    thread-safe) and take turns only for the sub-millisecond espeak-ng step. `threads` is how
    many CPU threads one call may use.
    """

    sample_rate: int

    def __init__(
        self,
        model: Path,
        config: Path,
        *,
        threads: int = 1,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        cfg = _read_config(Path(config))
        try:
            self.sample_rate = int(cfg["audio"]["sample_rate"])
            self.language = str(cfg.get("espeak", {}).get("voice", "en-us"))
            self.id_map: dict[str, list[int]] = {
                str(k): [int(i) for i in v] for k, v in cfg["phoneme_id_map"].items()
            }
            inference = cfg.get("inference", {})
            self.noise_scale = float(inference.get("noise_scale", 0.667))
            self.length_scale = float(inference.get("length_scale", 1.0))
            self.noise_w = float(inference.get("noise_w", 0.8))
            speakers = {str(k): int(v) for k, v in (cfg.get("speaker_id_map") or {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise RuntimeError(f"{config}: not a Piper voice config ({err!r})") from err
        missing = [s for s in (_BOS, _EOS, _PAD) if s not in self.id_map]
        if missing:
            raise RuntimeError(f"{config}: phoneme_id_map lacks {' '.join(missing)}")
        name = str(cfg.get("dataset") or _name_from_file(Path(model)))
        self.speakers: dict[str, int | None] = dict(speakers) if speakers else {name: None}
        self.session = open_onnx_session(Path(model), threads, providers)
        self._has_sid = any(i.name == "sid" for i in self.session.get_inputs())

    @property
    def voices(self) -> list[str]:
        """The voice ids this model speaks."""
        return list(self.speakers)

    def synthesize(self, text: str, voice: Voice) -> PCM:
        """Audio for `text` at `sample_rate` (int16 mono); empty text gives an empty array.

        Raises ValueError for a voice this model does not have (blends are Kokoro's only).
        """
        speaker = self._speaker(voice)
        length_scale = self.length_scale / voice.speed
        pause = np.zeros(int(SENTENCE_PAUSE_S / voice.speed * self.sample_rate), np.float32)
        pieces: list[np.ndarray] = []
        for sentence in split_sentences(text, MAX_SENTENCE_CHARS):
            phonemes = phonemize(sentence, self.language)
            if not any(symbol.isalpha() for symbol in phonemes):
                continue  # punctuation alone: nothing to say
            ids = self.phoneme_ids(phonemes)
            if pieces:
                pieces.append(pause)
            pieces.append(self._infer(ids, length_scale, speaker))
        if not pieces:
            return np.zeros(0, np.int16)
        return to_int16(np.concatenate(pieces))

    def phoneme_ids(self, phonemes: str) -> list[int]:
        """Model input ids for an IPA string; symbols the voice does not know are skipped."""
        pad = self.id_map[_PAD]
        ids = [*self.id_map[_BOS], *pad]
        for symbol in unicodedata.normalize("NFD", phonemes):
            known = self.id_map.get(symbol)
            if known is not None:
                ids.extend(known)
                ids.extend(pad)
        ids.extend(self.id_map[_EOS])
        return ids

    def _speaker(self, voice: Voice) -> int | None:
        known = ", ".join(self.speakers)
        if voice.id is None:
            raise ValueError(
                f"Piper cannot blend voices ({', '.join(voice.voice_ids)}): give one voice id "
                f"(its voices: {known}), or use Kokoro for blends"
            )
        if voice.id not in self.speakers:
            raise ValueError(f"Piper voice {voice.id!r} is not in this model; its voices: {known}")
        return self.speakers[voice.id]

    def _infer(self, ids: list[int], length_scale: float, speaker: int | None) -> np.ndarray:
        inputs: dict[str, np.ndarray] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([self.noise_scale, length_scale, self.noise_w], dtype=np.float32),
        }
        if self._has_sid:
            inputs["sid"] = np.array([speaker or 0], dtype=np.int64)
        audio: np.ndarray = self.session.run(None, inputs)[0]
        return audio.reshape(-1)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise RuntimeError(f"cannot read Piper voice config {path}: {err.strerror}") from err
    except ValueError as err:
        raise RuntimeError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(cfg, dict):
        raise RuntimeError(f"{path}: not a Piper voice config (expected a JSON object)")
    return cfg


def _name_from_file(model: Path) -> str:
    """The voice name in a Piper file name: "joe" for "en_US-joe-medium.onnx"."""
    parts = model.name.split("-")
    return parts[1] if len(parts) >= 3 else model.stem


def open_onnx_session(model: Path, threads: int, providers: Sequence[str]) -> ort.InferenceSession:
    """An onnxruntime session for `model`, or a RuntimeError that names the file."""
    if not model.is_file():
        raise RuntimeError(f"TTS model file not found: {model}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # idle worker threads would otherwise spin on cores that ASR and the LLM need
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model), sess_options=options, providers=list(providers))
    except Exception as err:  # onnxruntime raises its own exception types for a bad file
        raise RuntimeError(f"cannot load TTS model {model}: {err}") from err
