"""Small JSON files of remembered results under the cache folder (~/.cache/voice-agent): engine
checks that passed, the session capacity measured. Each maps a key (what the result holds for)
to a record with an `at` time; the newest `keep` are kept. A file that cannot be read is empty,
one that cannot be written costs only the work of finding the result again (a warning)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from voice_agent.modelfiles import default_cache_dir

log = logging.getLogger(__name__)


def cache_file(name: str) -> Path:
    """`name` in voice-agent's cache folder (next to the models' folder)."""
    return default_cache_dir().parent / name


def read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write(path: Path, data: dict[str, Any], what: str, keep: int = 64) -> None:
    """Replace `path` with the newest `keep` records of `data` (atomically); `what` names them
    in the warning when it cannot."""
    kept = dict(sorted(data.items(), key=lambda kv: kv[1].get("at", 0))[-keep:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(kept, indent=1))
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot remember %s in %s: %s", what, path, exc)
