"""The words turn-taking reads: the spoken words of a transcript, the words a finished sentence
does not end on, whole questions, and the backchannels that keep a listener listening.

Plain functions of a transcript's text: the `Endpointer` asks whether a turn `hangs` or `asks`,
the `BargeInJudge` whether speech over the reply `takes_the_floor`.
"""

from __future__ import annotations

import re

BACKCHANNELS = frozenset(
    {
        *("uh", "huh", "uh-huh", "mm", "mhm", "mm-hmm", "hmm", "hm", "um", "oh", "ah", "aha"),
        *("yeah", "yes", "yep", "yup", "ya", "right", "okay", "ok", "sure", "alright"),
        *("i", "see", "got", "it", "cool", "nice", "wow", "really"),
    }
)
"""Words that, on their own, keep the listener listening rather than take the floor."""

_NON_SPEECH = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*")
"""What Whisper writes for sounds: [cough], (laughs), *sigh*."""


def words(text: str) -> list[str]:
    """The spoken words of a transcript, lower case, without punctuation or sound labels."""
    text = _NON_SPEECH.sub(" ", text.lower())
    return [w for w in (t.strip(".,!?;:\"'…-") for t in text.split()) if w]


HANGING = frozenset(
    {
        *("a", "an", "the", "my", "your", "his", "her", "our", "their", "its"),
        *("to", "of", "for", "at", "with", "from", "about", "by", "into", "than"),
        *("and", "or", "but", "because", "if", "when", "while", "although", "unless"),
        *("is", "are", "was", "were", "am", "be", "could", "would", "should", "can", "will"),
        *("um", "uh", "er"),
    }
)
"""Words a finished statement does not end on: a turn whose transcript ends on one (and not
on a question or exclamation mark: "Who is it for?") waits the longer silence whatever the
turn model says, for the model hears intonation, not grammar. Particles that end commands
("turn it on", "log in") are left out."""


def hangs(text: str) -> bool:
    """Whether a transcript stops on a word that needs more after it ("...order a")."""
    ws = words(text)
    return bool(ws) and ws[-1] in HANGING and not text.rstrip().endswith(("?", "!"))


def asks(text: str) -> bool:
    """Whether a transcript is a whole question: it ends with a question mark, and not on a
    word that needs more after it (Whisper wrote "Can you tell me about the?" once)."""
    ws = words(text)
    return text.rstrip().endswith("?") and bool(ws) and ws[-1] not in HANGING


def takes_the_floor(text: str, backchannels_interrupt: bool) -> bool:
    """Whether a transcript heard while the assistant speaks is an interruption."""
    ws = words(text)
    if backchannels_interrupt:
        return bool(ws)
    return any(w not in BACKCHANNELS for w in ws)
