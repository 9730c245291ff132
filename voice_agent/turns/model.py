"""The turn model and what it hears: the last 8 s of the user's audio.

The turn model (Smart Turn v3.2, `audio/smart_turn.py`) scores how finished the audio sounds;
`TurnStage` runs it in the executor at each pause the `Endpointer` asks about (`ScoreTurn`),
on the audio `RecentAudio` has kept.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from voice_agent.frames import PCM

TURN_MODEL_WINDOW_S = 8
"""Audio the turn model looks at: the last 8 s."""

TurnModel = Callable[[PCM], float]
"""Audio of the last seconds -> probability that the turn is complete."""


class RecentAudio:
    """The last `seconds` of a stream, in the whole chunks it came in (all of it if shorter)."""

    def __init__(self, rate: int, seconds: int = TURN_MODEL_WINDOW_S) -> None:
        self._keep = seconds * rate
        self._chunks: deque[PCM] = deque()
        self._len = 0

    def add(self, pcm: PCM) -> None:
        self._chunks.append(pcm)
        self._len += len(pcm)
        while self._len - len(self._chunks[0]) >= self._keep:
            self._len -= len(self._chunks.popleft())

    def audio(self) -> PCM:
        """What is kept, as one array (empty int16 if nothing is)."""
        if not self._chunks:
            return np.zeros(0, np.int16)
        return np.concatenate(list(self._chunks))

    def __len__(self) -> int:
        return self._len
