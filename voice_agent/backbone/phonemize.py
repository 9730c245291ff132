"""Text to IPA phonemes with espeak-ng, for the TTS engines.

Neither Piper nor Kokoro reads letters: both are trained on phonemes, so text goes through
espeak-ng's grapheme-to-phoneme rules first. This module drives espeak-ng through
phonemizer-fork's `EspeakBackend`, using the shared library and voice data that ship inside the
`espeakng-loader` wheel, so no system espeak-ng is needed.

- Piper voices were trained on exactly this output (``phoneme_type: espeak``): IPA with stress
  marks, words separated by spaces and punctuation kept, because commas, full stops and question
  marks are phoneme ids too and carry the pauses and intonation. `PiperTTS` maps each character
  of it (after Unicode NFD) through the voice's ``phoneme_id_map``.
- Kokoro maps the same IPA symbol by symbol through its vocab.json (which has every symbol
  espeak-ng uses for English but the rare syllabic mark, and the common punctuation). Its
  voices understand this IPA as it is: see `voice_agent.backbone.tts_kokoro` for why it is not
  folded into misaki's symbols.

espeak-ng keeps global state and is not thread-safe, so every call holds a lock; a call takes
well under a millisecond per sentence. One backend per language is created on first use and kept.
"""

from __future__ import annotations

import logging
import re
import threading

import espeakng_loader
from phonemizer.backend import EspeakBackend
from phonemizer.backend.espeak.wrapper import EspeakWrapper

log = logging.getLogger(__name__)
# phonemizer warns about "words count mismatch" whenever punctuation is kept: noise, not news
_espeak_log = logging.getLogger(f"{__name__}.espeak")
_espeak_log.setLevel(logging.ERROR)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_lock = threading.Lock()
_backends: dict[str, EspeakBackend] = {}
_configured = False


def phonemize(text: str, language: str = "en-us") -> str:
    """IPA for `text` as espeak-ng speaks it in `language` (an espeak-ng voice name, "en-us").

    Stress marks and punctuation are kept; words are separated by single spaces (line breaks
    too). Empty text gives "". Raises ValueError for a language espeak-ng does not know,
    RuntimeError if espeak-ng itself cannot be loaded.
    """
    text = " ".join(_CONTROL.sub(" ", text).split())  # espeak-ng would stop at a NUL
    if not text:
        return ""
    with _lock:
        backend = _backend(language)
        result = backend.phonemize([text], strip=True)
    return " ".join(result[0].split()) if result else ""


def _backend(language: str) -> EspeakBackend:
    """The cached backend for `language`; the caller holds `_lock`."""
    global _configured
    if language in _backends:
        return _backends[language]
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
            language_switch="remove-flags",
            logger=_espeak_log,
        )
    except RuntimeError as err:
        if "language" in str(err) and "not supported" in str(err):
            raise ValueError(f"espeak-ng has no language {language!r}") from err
        raise RuntimeError(
            f"cannot start espeak-ng from {espeakng_loader.get_library_path()}: {err}; "
            "reinstall espeakng-loader and phonemizer-fork"
        ) from err
    _backends[language] = backend
    return backend
