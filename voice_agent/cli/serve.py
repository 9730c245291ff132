"""`voice-agent serve`: the server, in this process or, with `--dashboard`, as a child process
behind the latency dashboard."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from voice_agent.cli.exits import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from voice_agent.config import Settings
from voice_agent.modelfiles import default_cache_dir


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    """`voice-agent serve [--dashboard]`: until stopped; the exit status."""
    from voice_agent.enginecheck import EngineCheckFailed
    from voice_agent.server import ServerError, check_binding, run_server

    try:
        if args.dashboard:
            check_binding(settings)
            return _serve_with_dashboard(args.argv, settings)
        asyncio.run(run_server(settings))
    except EngineCheckFailed as exc:
        print(f"voice-agent serve: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except ServerError as exc:
        print(f"voice-agent serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the port is taken, say
        print(f"voice-agent serve: cannot listen on {settings.server.host}:"
              f"{settings.server.port}: {exc.strerror or exc}", file=sys.stderr)  # fmt: skip
        return EXIT_INPUT
    return EXIT_OK


def _serve_with_dashboard(argv: list[str], settings: Settings) -> int:
    """The server as a child process, the dashboard in front of it (it waits while the models
    load); when the dashboard quits, the server stops."""
    import subprocess

    from voice_agent.ui.dashboard import run_dashboard

    log = default_cache_dir().parent / "serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "voice_agent", *[a for a in argv if a != "--dashboard"]]
    with log.open("w") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    print(f"voice-agent serve: server log in {log}", file=sys.stderr)
    cfg = settings.server
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
    try:
        code = run_dashboard(f"ws://{host}:{cfg.port}", token=cfg.token)
    finally:
        child.terminate()
        try:
            child.wait(cfg.shutdown_grace_s + 5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if child.returncode not in (0, -15):
        print(f"voice-agent serve: {_server_death(child.returncode, log)}", file=sys.stderr)
        return child.returncode if child.returncode > 0 else EXIT_INPUT
    return code


def _server_death(returncode: int, log: Path) -> str:
    """Why the server child ended, in one line: its own last word, or the signal that killed
    it (a native runtime's crash leaves no Python error behind)."""
    import signal

    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return (f"the server died ({name}); see {log}, and run `voice-agent doctor` to see "
                "which engine crashes on this machine")  # fmt: skip
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    last = lines[-1].removeprefix("voice-agent serve: ") if lines else "no output"
    return f"the server exited with {returncode}: {last} (log: {log})"
