"""Cutting a streamed reply into chunks to speak: the first clause as soon as it is complete,
then sentence by sentence, so the first audio is ready early and later chunks sound natural."""

from __future__ import annotations

import re

_CLAUSE_END = re.compile(r"[,;:.!?\u2014](?=\s)|[.!?]$")
_SENTENCE_END = re.compile(r"[.!?](?=\s)")


class ClauseChunker:
    """Feed text as it streams; get back the chunks that are ready to speak."""

    def __init__(self, first_max_chars: int = 60, max_chars: int = 240) -> None:
        self.first_max_chars = first_max_chars
        self.max_chars = max_chars
        self._buf = ""
        self._first = True

    def reset(self) -> None:
        self._buf, self._first = "", True

    def feed(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        while True:
            chunk = self._take()
            if chunk is None:
                return out
            if chunk:
                out.append(chunk)

    def flush(self) -> str:
        chunk, self._buf = self._buf.strip(), ""
        return chunk

    def _take(self) -> str | None:
        pattern = _CLAUSE_END if self._first else _SENTENCE_END
        limit = self.first_max_chars if self._first else self.max_chars
        m = pattern.search(self._buf)
        if m is not None and m.end() <= limit:
            cut = m.end()
        elif len(self._buf) > limit:
            space = self._buf.rfind(" ", 0, limit)
            cut = space if space > 0 else limit
        else:
            return None
        chunk, self._buf = self._buf[:cut].strip(), self._buf[cut:]
        self._first = False
        return chunk
