"""Text to IPA phonemes with espeak-ng, for the TTS engines.

Neither Piper nor Kokoro reads letters: both are trained on phonemes, so text goes through
espeak-ng's grapheme-to-phoneme rules first. This module drives espeak-ng through
phonemizer-fork's `EspeakBackend`, using the shared library and voice data that ship inside the
`espeakng-loader` wheel, so no system espeak-ng is needed.

- Piper voices were trained on exactly this output (``phoneme_type: espeak``): IPA with stress
  marks, words separated by spaces and punctuation kept, because commas, full stops and question
  marks are phoneme ids too and carry the pauses and intonation. `PiperTTS` maps each character
  of it (after Unicode NFD) through the voice's ``phoneme_id_map``.
- Kokoro v1.0 was trained on misaki phonemes, which are espeak-ng IPA with diphthongs and
  affricates folded into single symbols ("eɪ" -> "A", "dʒ" -> "ʤ"). `KokoroTTS` asks for the
  tied form (``tie=True``: "e^ɪ") so that those pairs can be found unambiguously, folds them, and
  maps the rest through Kokoro's vocab.

espeak-ng keeps global state and is not thread-safe, so every call holds a lock; a call takes
well under a millisecond per sentence. Backends are created once per (language, tie) and kept.
"""

from __future__ import annotations

import logging
import threading

import espeakng_loader
from phonemizer.backend import EspeakBackend
from phonemizer.backend.espeak.wrapper import EspeakWrapper

log = logging.getLogger(__name__)

TIE = "^"
"""The character that joins the two halves of a diphthong or affricate when ``tie=True``."""

_lock = threading.Lock()
_backends: dict[tuple[str, bool], EspeakBackend] = {}
_configured = False


def phonemize(text: str, language: str = "en-us", *, tie: bool = False) -> str:
    """IPA for `text` as espeak-ng speaks it in `language` (an espeak-ng voice name, "en-us").

    Stress marks and punctuation are kept; words are separated by single spaces. With `tie`,
    multi-letter phonemes are joined by `TIE` ("a^ɪ"). Empty text gives "". Raises ValueError
    for a language espeak-ng does not know, RuntimeError if espeak-ng itself cannot be loaded.
    """
    text = " ".join(text.split())
    if not text:
        return ""
    with _lock:
        backend = _backend(language, tie)
        result = backend.phonemize([text], strip=True)
    return " ".join(result[0].split()) if result else ""


def _backend(language: str, tie: bool) -> EspeakBackend:
    """The cached backend for (language, tie); the caller holds `_lock`."""
    global _configured
    key = (language, tie)
    if key in _backends:
        return _backends[key]
    if not _configured:
        try:
            EspeakWrapper.set_library(espeakng_loader.get_library_path())
            EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
        except RuntimeError as err:
            raise RuntimeError(
                f"espeak-ng data is missing; reinstall espeakng-loader ({err})"
            ) from err
        _configured = True
    try:
        backend = EspeakBackend(
            language,
            preserve_punctuation=True,
            with_stress=True,
            tie=TIE if tie else False,
            language_switch="remove-flags",
            logger=log,
        )
    except RuntimeError as err:
        if "language" in str(err) and "not supported" in str(err):
            raise ValueError(f"espeak-ng has no language {language!r}") from err
        raise RuntimeError(
            f"cannot start espeak-ng from {espeakng_loader.get_library_path()}: {err}; "
            "reinstall espeakng-loader and phonemizer-fork"
        ) from err
    _backends[key] = backend
    return backend
