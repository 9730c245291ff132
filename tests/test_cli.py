"""The command-line contract: subcommands, exit codes, where output goes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.servers import console_script, free_port
from voice_agent.cli import main

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = [
    "serve",
    "talk",
    "transcribe",
    "speak",
    "personas",
    "models",
    "doctor",
    "llm-server",
    "bench",
    "dashboard",
]


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"    {name}" in out


def test_validate_exits_0_for_good_files_and_1_with_line_numbered_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = sorted((REPO / "personas").glob("*.yaml"))
    assert main(["personas", "validate", *map(str, good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\nname: B\ndescription: d\nsystem_prompt: hi\nvoice:\n  id: nobody\n")
    capsys.readouterr()
    assert main(["personas", "validate", str(good[0]), str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(": ok")
    assert out[1] == f"{bad}:6: voice.id: unknown voice 'nobody' for engine piper (known: joe)"


def test_personas_list_and_show(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "none"
    assert main(["personas", "--set", f"personas.dirs=[{empty}]", "list"]) == 0
    out = capsys.readouterr().out
    assert "* concierge" in out and "tutor" in out and "sprinter" in out
    assert main(["personas", "show", "tutor"]) == 0
    assert "endpoint_silence_ms: 900" in capsys.readouterr().out
    assert main(["personas", "show", "nobody"]) == 1
    assert "unknown persona 'nobody'" in capsys.readouterr().err


def test_config_show_layers_env_and_flags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VOICE_AGENT_SERVER__PORT", "9123")
    assert main(["config", "show", "--set", "engines.llm.model=smollm2-135m"]) == 0
    out = capsys.readouterr().out
    assert "port: 9123" in out and "model: smollm2-135m" in out
    monkeypatch.setenv("VOICE_AGENT_SERVER__PORT", "many")
    assert main(["config", "show"]) == 1
    assert "$VOICE_AGENT_SERVER__PORT: server.port:" in capsys.readouterr().err


def test_the_console_script_runs_and_keeps_stdout_for_results() -> None:
    exe = console_script()
    done = subprocess.run(
        [exe, "serve", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "voice-agent serve: server.host is 0.0.0.0" in done.stderr and "token" in done.stderr


@pytest.mark.slow
def test_serve_answers_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    exe, port = console_script(), free_port()
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen([exe, "serve", "--port", str(port)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while f"serving on http://127.0.0.1:{port}" not in Path(log.name).read_text():
            assert server.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline, "the server did not start in 2 minutes"
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert json.load(r)["status"] == "ok"
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    finally:
        server.kill()
        server.wait()
    assert "Traceback" not in Path(log.name).read_text()


def test_models_list_marks_the_models_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--set", "engines.llm.model=smollm2-135m"]) == 0
    lines = capsys.readouterr().out.splitlines()
    marked = {line.split()[1] for line in lines if line.startswith("* ")}
    assert marked == {"whisper-tiny-en", "smollm2-135m", "piper-joe"}


def test_bench_sessions_is_one_count_or_for_capacity_a_list(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "conversation", "--sessions", "1,2"]) == 1
    assert "--sessions takes a list only for `bench capacity`" in capsys.readouterr().err
    assert main(["bench", "capacity", "--sessions", "1,x"]) == 1
    assert "a number or a list like 1,2,4,8, not '1,x'" in capsys.readouterr().err
    assert main(["bench", "capacity", "--sessions", "0,2"]) == 1
    assert "--sessions must be at least 1" in capsys.readouterr().err


def test_llm_server_needs_a_key_off_loopback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLAMA_SERVER_API_KEY", raising=False)
    assert main(["llm-server", "--host", "0.0.0.0"]) == 2
    assert "set a key in $LLAMA_SERVER_API_KEY" in capsys.readouterr().err
