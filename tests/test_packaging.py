"""The distribution works installed from a wheel, not only from a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        timeout=300,
    )
    (whl,) = out.glob("voice_agent-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_carries_ui_personas_and_catalog_inside_the_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    personas = {Path(n).name for n in names if n.startswith("voice_agent/personas/")}
    assert personas == {p.name for p in (REPO / "personas").glob("*.yaml")}
    assert "voice_agent/models/catalog.yaml" in names
    assert "voice_agent/ui/__init__.py" in names
    web = {Path(n).name for n in names if n.startswith("voice_agent/ui/web/")}
    assert web == {p.name for p in (REPO / "ui" / "web").iterdir()}  # the browser page
    assert "voice_agent/py.typed" in names
    tops = {n.split("/")[0] for n in names}
    assert tops <= {
        "voice_agent",
        f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info",
    }, tops


@pytest.mark.slow
def test_installed_wheel_runs_from_anywhere(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(target), "HOME": str(tmp_path)}
    code = "import voice_agent, sys; print(voice_agent.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert where.stdout.startswith(str(target)), where.stdout + where.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "voice_agent", "personas", "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert str(target) in listed.stdout and "concierge" in listed.stdout
    shipped = sorted((target / "voice_agent" / "personas").glob("*.yaml"))
    ok = subprocess.run(
        [sys.executable, "-m", "voice_agent", "personas", "validate", *map(str, shipped)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
