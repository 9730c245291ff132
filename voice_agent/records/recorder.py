"""Recording one session, and the records of a server.

    recorder = records.recorder()            # None when records are off
    transport = recorder.wrap(transport)     # before the session is made: its audio is tapped
    task = owner.create_task(recorder.run(session.events()))  # before the session starts
    ...                                      # it ends once the session's events have

`SessionRecorder` writes the transcript's lines as they happen and the audio as it becomes
complete, in worker threads, never on the event loop; what it holds is bounded (the lines
waiting, `MAX_LINES`; the audio, `voice_agent.records.audio.MAX_PENDING_S`). A crash keeps
what was written. `Records` is the server's side: the store, the retention (prune at start,
then daily, in a worker thread).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from voice_agent.config import RecordSettings
from voice_agent.eventbus import Subscription
from voice_agent.events import Event
from voice_agent.records.audio import MARGIN_S, RecordedTransport, StereoRecording, WavFile
from voice_agent.records.clock import RATE, SessionClock
from voice_agent.records.store import AUDIO, TRANSCRIPT, RecordStore
from voice_agent.records.transcript import TranscriptLines
from voice_agent.tasks import TaskOwner
from voice_agent.transports.base import Transport

log = logging.getLogger(__name__)

FLUSH_S = 0.5
"""How often what is complete is written."""
MAX_LINES = 10_000
"""Transcript lines waiting to be written, at most (beyond, they are dropped and counted)."""
CLOSE_TIMEOUT_S = 10.0
PRUNE_EVERY_S = 86_400.0


def recorded(settings: RecordSettings) -> dict[str, bool]:
    """What a session is recorded of: the `session` message's `recorded`."""
    return {"transcript": settings.enabled, "audio": settings.enabled and settings.audio}


class SessionRecorder(TaskOwner):
    """One session's record (see the module docstring)."""

    def __init__(self, store: RecordStore, *, audio: bool) -> None:
        self.id = store.new_id()
        super().__init__(f"record-{self.id}")
        self.store = store
        self.clock = SessionClock()
        self.recording = StereoRecording(RATE) if audio else None
        self._lines = TranscriptLines(self.id, self.clock, audio=audio)
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._folder: Path | None = None
        self._wav: WavFile | None = None
        self._closing = False
        self.dropped_lines = 0

    def wrap(self, transport: Transport) -> Transport:
        """`transport`, its audio recorded both ways (itself, when audio is not recorded)."""
        if self.recording is None:
            return transport
        return RecordedTransport(transport, self.recording, self.clock)

    async def run(self, events: Subscription[Event]) -> None:
        """Read the session's events (subscribe before the session starts) and write, until
        they end (with the session); then write what is left and close the files."""
        writer = self.create_task(self._write(), "writer")
        try:
            async for event in events:
                for line in self._lines.feed(event):
                    if len(self._pending) >= MAX_LINES:
                        self.dropped_lines += 1
                        continue
                    self._pending.append(line)
                    self._wake.set()
        finally:
            self._closing = True  # the writer stops after what it is writing (never mid-write)
            self._wake.set()
            await asyncio.wait({writer}, timeout=CLOSE_TIMEOUT_S)
            await self.cancel_tasks()
            await self._close()

    async def _write(self) -> None:
        await asyncio.to_thread(self._open)
        while not self._closing:
            await self._flush()
            self._wake.clear()
            try:
                async with asyncio.timeout(FLUSH_S):
                    await self._wake.wait()
                await asyncio.sleep(FLUSH_S / 5)  # (lines come in bursts: a few at a time)
            except TimeoutError:
                pass

    def _open(self) -> None:
        self._folder = self.store.create(self.id)
        (self._folder / TRANSCRIPT).touch(mode=0o600)
        if self.recording is not None:
            self._wav = WavFile(self._folder / AUDIO, RATE)

    async def _flush(self, final: bool = False) -> None:
        lines, self._pending = self._pending, []
        audio = None
        if self.recording is not None:
            done = self.clock.samples() - round(MARGIN_S * RATE)
            audio = self.recording.finish() if final else self.recording.take(done)
        try:
            await asyncio.to_thread(self._append, lines, audio)
        except OSError as exc:
            log.warning("record %s: cannot write: %s", self.id, exc)

    def _append(self, lines: list[dict[str, Any]], audio: Any) -> None:
        if self._folder is None:
            return
        if lines:
            with (self._folder / TRANSCRIPT).open("a", encoding="utf-8") as f:
                f.write("".join(json.dumps(line) + "\n" for line in lines))
        if audio is not None and self._wav is not None:
            self._wav.write(audio)

    async def _close(self) -> None:
        if self._folder is None:  # the writer never opened the files (a session that failed)
            await asyncio.to_thread(self._open)
        await self._flush(final=True)
        if self._wav is not None:
            await asyncio.to_thread(self._wav.close)
        lost = self.dropped_lines + (self.recording.dropped if self.recording else 0)
        if lost:
            log.warning("record %s: %d lines and samples lost (a slow disk)", self.id, lost)


class Records(TaskOwner):
    """A server's records: a recorder per session when they are on, and their retention."""

    def __init__(self, settings: RecordSettings) -> None:
        super().__init__("records")
        self.settings = settings
        self.store = RecordStore(settings.dir)

    def recorder(self) -> SessionRecorder | None:
        """A new session's recorder, or None when records are off."""
        if not self.settings.enabled:
            return None
        return SessionRecorder(self.store, audio=self.settings.audio)

    def start(self) -> None:
        """Prune now, then daily (when a retention is set)."""
        if self.settings.retention_days > 0:
            self.create_task(self._prune(), "prune")

    async def _prune(self) -> None:
        while True:
            try:
                gone = await asyncio.to_thread(self.store.prune, self.settings.retention_days)
                if gone:
                    log.info("records: deleted %d older than %g days", len(gone),
                             self.settings.retention_days)  # fmt: skip
            except OSError as exc:
                log.warning("records: cannot prune %s: %s", self.store.root, exc)
            await asyncio.sleep(PRUNE_EVERY_S)

    async def close(self) -> None:
        await self.cancel_tasks()
