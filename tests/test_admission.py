"""How many sessions a server admits (voice_agent.admission): a number, or `auto`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.servers import MakeServer, http_get
from voice_agent import admission
from voice_agent.admission import remember_knee, session_limit
from voice_agent.config import Settings


def auto(**engines: object) -> Settings:
    return Settings.model_validate({"server": {"max_sessions": "auto"}, "engines": engines})


def test_a_number_is_the_limit(tmp_path: Path) -> None:
    limit = session_limit(Settings.model_validate({"server": {"max_sessions": 3}}))
    assert (limit.sessions, limit.why) == (3, "server.max_sessions")
    assert Settings().server.max_sessions == "auto"  # the default


@pytest.mark.parametrize(("cores", "sessions"), [(1, 1), (2, 1), (3, 1), (16, 8)])
def test_unmeasured_auto_is_one_session_per_two_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int, sessions: int
) -> None:
    monkeypatch.setattr(admission, "_cores", lambda: cores)
    limit = session_limit(auto(), tmp_path / "capacity.json")
    assert limit.sessions == sessions
    assert f"estimated from {cores} cores" in limit.why


def test_auto_follows_the_knee_measured_with_these_engines(tmp_path: Path) -> None:
    file = tmp_path / "capacity.json"
    remember_knee(auto(), 3, file)
    limit = session_limit(auto(), file)
    assert limit.sessions == 3 and "measured by `voice-agent bench capacity`" in limit.why
    other = auto(llm={"slots": 4})  # other engine settings: not what was measured
    assert "estimated" in session_limit(other, file).why
    remember_knee(auto(), 0, file)  # not even one session within the p95: one is let in
    assert session_limit(auto(), file).sessions == 1


def test_a_broken_capacity_file_means_an_estimate(tmp_path: Path) -> None:
    file = tmp_path / "capacity.json"
    file.write_text("{not json")
    assert "estimated" in session_limit(auto(), file).why
    remember_knee(auto(), 2, file)  # and is replaced by the next measurement
    assert session_limit(auto(), file).sessions == 2


async def test_the_server_admits_what_auto_resolves_to(
    make_server: MakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    server = await make_server(max_sessions="auto")
    remember_knee(server.settings, 5)
    assert (tmp_path / "voice-agent" / "capacity.json").exists()
    again = await make_server(max_sessions="auto")
    status, _, body = await http_get(again.url + "/healthz")
    assert (status, json.loads(body)["max_sessions"]) == (200, 5)
