"""Word error rate, on text normalised the way the TTS speaks it (the benches and the tests)."""

from __future__ import annotations

import re

from voice_agent.backbone.text import normalize_for_speech


def words(text: str) -> list[str]:
    spoken = normalize_for_speech(text).lower().replace("-", " ")
    return re.sub(r"[^\w\s']", " ", spoken).split()


def wer(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)
