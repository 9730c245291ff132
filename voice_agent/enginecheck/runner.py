"""The runner of the engine checks: each in a child process, a crash or a hang named, passes
remembered.

A crash or a load error in the child becomes a `Result` that names the engine, why it failed and
how to repair it. A passed check is remembered, keyed by the engine's settings, its runtime's
files and the CPU, so only the first start on a machine (or after a rebuild) pays for it.

The child speaks JSON lines on stdout: ``{"begin": NAME}``, then ``{"ok": NAME, "detail": ...}``
or ``{"error": NAME, "detail": ...}``; a check that began and never ended is the one that
crashed (or hung), and the checks after it run in a fresh child.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from voice_agent import __version__, cachefile, nativecode
from voice_agent.config import Settings
from voice_agent.enginecheck.checks import Check, crash_repair, describe, needed, settings_of
from voice_agent.modelfiles import ModelError

log = logging.getLogger("voice_agent.enginecheck")  # the package's: log lines name it, as ever

TIMEOUT_S = 300.0
"""The longest one check may take (loading a model from a cold disk included)."""

_RUNTIMES = (
    "xllamacpp",
    "llama-cpp-python",
    "faster-whisper",
    "ctranslate2",
    "onnxruntime",
    "torch",
)


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    """How one check went."""

    name: str
    what: str
    """The engine, for people: ``LLM (llama-cpp, qwen2.5-0.5b)``."""
    ok: bool
    detail: str
    """What it did, or why it failed."""
    repair: str = ""
    seconds: float = 0.0
    cached: bool = False
    output: str = ""
    """The end of the child's stderr (a crash's native and Python stacks), when it failed."""

    def line(self) -> str:
        """One line for people."""
        if self.ok:
            return f"{self.what}: ok ({self.detail})"
        return f"{self.what}: {self.detail}" + (f"; {self.repair}" if self.repair else "")


class EngineCheckFailed(RuntimeError):
    """An engine crashed or could not load in its check; the message is one line a person can
    act on (which engine, why, how to repair it)."""

    def __init__(self, failed: Sequence[Result]) -> None:
        super().__init__(" | ".join(r.line() for r in failed))
        self.failed = list(failed)


def _failure(
    name: str, settings: Settings, rc: int, timeout_s: float | None, out: str, s: float
) -> Result:
    """The result of a check whose child ended (or was stopped after `timeout_s`) before it
    reported."""
    if timeout_s is not None:
        detail = f"did not finish its test run in {timeout_s:g} s"
        repair = "is the machine overloaded? `voice-agent doctor` runs it again"
    elif rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:
            sig = f"signal {-rc}"
        detail = f"crashed ({sig}) in its test run"
        repair = crash_repair(name, settings)
    else:
        detail = f"its test process exited with status {rc} before it finished"
        repair = "`voice-agent doctor` shows its output"
    return Result(name, describe(name, settings), False, detail, repair, s, output=out)


# -- the parent ---------------------------------------------------------------------------------


def default_cache_file() -> Path:
    """Where `ensure_engines_run` remembers the checks that passed."""
    return cachefile.cache_file("engine-checks.json")


def _runtime_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for dist in _RUNTIMES:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _identity(
    name: str, settings: Settings, cpu: nativecode.Cpu, versions: dict[str, str | None]
) -> str:
    """What a passed check stays valid for: the engine's settings, its runtimes, the CPU."""
    libraries = [
        (p.name, p.stat().st_size, p.stat().st_mtime_ns)
        for p in (nativecode.llama_libraries() if name == "llm" else [])
    ]
    blob = json.dumps(
        [
            __version__,
            name,
            settings_of(name, settings),
            versions,
            libraries,
            cpu.model,
            sorted(cpu.flags),
        ],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def run_checks(
    settings: Settings,
    names: Sequence[str],
    *,
    cache: Path | None = None,
    command: Sequence[str] | None = None,
    timeout_s: float = TIMEOUT_S,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run the named checks in child processes, in order; one `Result` each.

    Args:
        cache: a file of passed checks; a check that passed with the same identity is not run
            again (and its result says `cached`). None runs every check.
        command: the child to start (default: this package's checks, ``python -m
            voice_agent.enginecheck``); it gets the names as arguments, the settings as JSON
            on stdin.
        on_result: called with each result as it comes (for progress).
    """
    cpu = nativecode.cpu()
    remembered = cachefile.read(cache) if cache else {}
    versions = _runtime_versions()
    keys = {n: _identity(n, settings, cpu, versions) for n in names}
    results: dict[str, Result] = {}
    for n in names:
        if keys[n] in remembered:
            results[n] = Result(n, describe(n, settings), True, "passed before", cached=True)
            if on_result:
                on_result(results[n])
    todo = [n for n in names if n not in results]
    cmd = list(command or [sys.executable, "-m", "voice_agent.enginecheck"])
    if todo:
        log.info("checking that each engine runs on this machine (once per build): %s",
                 ", ".join(todo))  # fmt: skip
    while todo:
        for r in _run_child(cmd, settings, todo, timeout_s):
            results[r.name] = r
            todo.remove(r.name)
            if on_result:
                on_result(r)
    if cache:
        passed = {keys[n]: {"check": n, "at": time.time()} for n, r in results.items() if r.ok}
        if any(k not in remembered for k in passed):
            cachefile.write(cache, {**remembered, **passed}, "the engine checks")
    return [results[n] for n in names]


def _run_child(
    cmd: list[str], settings: Settings, names: list[str], timeout_s: float
) -> list[Result]:
    """One child for `names`; the results up to and including the first that did not end."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(
        [*cmd, *names],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stderr: list[str] = []
    drain = threading.Thread(target=_tail, args=(proc.stderr, stderr), daemon=True)
    drain.start()
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        proc.kill()

    results: list[Result] = []
    current: str | None = None
    started = time.perf_counter()
    timer: threading.Timer | None = None
    try:
        proc.stdin.write(settings.model_dump_json())
        proc.stdin.close()
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue  # a runtime that prints on stdout
            if "begin" in msg:
                current, started = msg["begin"], time.perf_counter()
                if timer is not None:
                    timer.cancel()
                timer = threading.Timer(timeout_s, expire)
                timer.daemon = True
                timer.start()
                continue
            name = msg.get("ok") or msg.get("error")
            if name is None:
                continue
            s = time.perf_counter() - started
            what = describe(name, settings)
            if "ok" in msg:
                results.append(Result(name, what, True, msg["detail"], seconds=s))
            else:
                results.append(Result(name, what, False, msg["detail"], msg.get("repair", ""), s))
            current = None
        rc = proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drain.join(timeout=5)
    left = [n for n in names if n not in {r.name for r in results}]
    if left:  # the child ended early: the check in progress (or the first left) is the culprit
        culprit = current or left[0]
        s = time.perf_counter() - started
        out = "".join(stderr[-40:])
        results.append(
            _failure(
                culprit,
                settings,
                rc,
                timeout_s if timed_out.is_set() else None,
                out,
                s,
            )
        )
    return results


def _tail(stream: IO[str], into: list[str], keep: int = 200) -> None:
    for line in stream:
        into.append(line)
        if len(into) > keep:
            del into[: len(into) - keep]


def ensure_engines_run(settings: Settings, cache: Path | None = None) -> None:
    """Run the checks of the engines these settings load (see `needed`), each once per build
    and machine; raise `EngineCheckFailed` naming every one that failed."""
    cache = cache or default_cache_file()

    def note(r: Result) -> None:
        if r.ok and not r.cached:  # a failure is raised, and said once
            log.info("engine check: %s", r.line())

    results = run_checks(settings, needed(settings), cache=cache, on_result=note)
    failed = [r for r in results if not r.ok]
    if failed:
        raise EngineCheckFailed(failed)


# -- the child ----------------------------------------------------------------------------------


def child_main(checks: Mapping[str, Check], names: Sequence[str], stdin: IO[str]) -> int:
    """Run `names` from `checks` with the settings read as JSON from `stdin`, reporting each
    as a JSON line on stdout (see the module docstring)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = Settings.model_validate_json(stdin.read())

    def say(**msg: str) -> None:
        print(json.dumps(msg), flush=True)

    for name in names:
        check = checks.get(name)
        say(begin=name)
        if check is None:
            say(error=name, detail=f"no such check (known: {', '.join(checks)})")
            continue
        try:
            say(ok=name, detail=check(settings))
        except ModelError as exc:
            say(error=name, detail=f"cannot load its model: {exc}")
        except Exception as exc:
            say(error=name, detail=f"failed: {type(exc).__name__}: {exc}")
    return 0
