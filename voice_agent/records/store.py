"""Where session records live: one folder per session under `records.dir` (by default
`$XDG_DATA_HOME/voice-agent/sessions`, i.e. `~/.local/share/voice-agent/sessions`: records are
data, not cache), holding `transcript.jsonl` and, when audio is recorded, `audio.wav`.

A record's id is its start in UTC and a random suffix (`20261203-194233-5f0c1a`), so that
ids sort by time and never repeat across restarts. Ids from outside (the command line, HTTP)
are checked against that form before any path is made of them. Everything here blocks: the
server calls it from worker threads.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tarfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TRANSCRIPT, AUDIO = "transcript.jsonl", "audio.wav"
_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")


class RecordError(Exception):
    """No such record, or an id that cannot be one."""


def default_records_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "voice-agent" / "sessions"


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """One record, as `voice-agent sessions list` and `GET /sessions` show it."""

    id: str
    started_at: str | None
    duration_s: float | None
    turns: int
    persona: str | None
    audio: bool
    complete: bool
    """False if the transcript has no `session_ended` line (the process ended first)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RecordStore:
    """The records under `root` (see the module docstring)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_records_dir()).expanduser()

    @staticmethod
    def new_id(now: float | None = None) -> str:
        stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        return f"{stamp:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"

    def create(self, record: str) -> Path:
        """The new record's folder (only its owner can read it)."""
        folder = self.root / record
        folder.mkdir(parents=True, mode=0o700)
        return folder

    def folder(self, record: str) -> Path:
        """The folder of an existing record; `RecordError` for anything else."""
        if not _ID.match(record):
            raise RecordError(f"{record!r} is not a record id (like 20261203-194233-5f0c1a)")
        folder = self.root / record
        if not (folder / TRANSCRIPT).is_file():
            raise RecordError(f"no record {record} in {self.root}")
        return folder

    def ids(self) -> list[str]:
        """Every record's id, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _ID.match(p.name) and p.is_dir())

    def lines(self, record: str) -> list[dict[str, Any]]:
        """A record's transcript lines (a line cut short by a crash is left out)."""
        out = []
        with (self.folder(record) / TRANSCRIPT).open(encoding="utf-8") as f:
            for raw in f:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(line, dict):
                    out.append(line)
        return out

    def summary(self, record: str) -> RecordSummary:
        lines = self.lines(record)
        head = next((x for x in lines if x.get("type") == "session"), {})
        ended = next((x for x in lines if x.get("type") == "session_ended"), None)
        last = ended or (lines[-1] if lines else {})
        t_ms = last.get("t_ms")
        turns = {x.get("turn") for x in lines if x.get("type") == "user_turn"}
        return RecordSummary(
            id=record,
            started_at=head.get("started_at"),
            duration_s=round(t_ms / 1000, 1) if isinstance(t_ms, int | float) else None,
            turns=len(turns),
            persona=head.get("persona"),
            audio=(self.folder(record) / AUDIO).is_file(),
            complete=ended is not None,
        )

    def summaries(self) -> list[RecordSummary]:
        out = []
        for record in self.ids():
            try:
                out.append(self.summary(record))
            except (RecordError, OSError):  # (gone meanwhile, or pruned)
                continue
        return out

    def audio(self, record: str) -> Path:
        path = self.folder(record) / AUDIO
        if not path.is_file():
            raise RecordError(f"record {record} has no audio (records.audio was off)")
        return path

    def export(self, record: str, out: Path) -> Path:
        """The record's files as `out`: a .tar.gz or .tgz archive, else a folder."""
        folder = self.folder(record)
        files = [p for p in (folder / TRANSCRIPT, folder / AUDIO) if p.is_file()]
        if out.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(out, "w:gz") as tar:
                for path in files:
                    tar.add(path, arcname=f"{record}/{path.name}")
        else:
            out.mkdir(parents=True, exist_ok=True)
            for path in files:
                shutil.copyfile(path, out / path.name)
        return out

    def prune(self, retention_days: float, now: float | None = None) -> list[str]:
        """Delete the records last written more than `retention_days` ago; their ids."""
        limit = (time.time() if now is None else now) - retention_days * 86400
        gone = []
        for record in self.ids():
            folder = self.root / record
            try:
                last = max(p.stat().st_mtime for p in [folder, *folder.iterdir()])
            except OSError:
                continue
            if last < limit:
                shutil.rmtree(folder, ignore_errors=True)
                gone.append(record)
        return gone
