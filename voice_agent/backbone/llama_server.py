"""llama.cpp's own server in a child process that the parent supervises.

llama.cpp's server (here the prebuilt, portable CPU build of the `xllamacpp` package: no
compiler, no -march=native) schedules every conversation's generation together: continuous
batching (the sequences of several sessions decoded in one batch), a slot per conversation
that keeps its prompt in the KV cache, and a cancelled request stops at the next token without
disturbing the others. It speaks the OpenAI chat-completions protocol on a loopback port.

It runs in a child process because native code that crashes takes its process down with it:
here that is the child, not the server with its sessions. `LlamaServer` starts it, waits until
the model is loaded, and restarts it whenever it dies (with a growing pause between tries while
it keeps failing); callers ask `wait_ready()` for its address and get an error if it does not
come back in time.

The child (``python -m voice_agent.backbone.llama_server``) reads its settings as one JSON line
on stdin and its API key from the environment, prints ``{"url": ...}`` once it serves (or
``{"error": ...}``), and stops when its stdin closes, so it never outlives the parent. Its
output (llama.cpp's log) goes to a file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KEY_ENV = "LLAMA_SERVER_API_KEY"
_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Pauses before restarting a server that keeps dying (the last one repeats)."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the child runs llama.cpp's server."""

    model: str
    """The GGUF file."""
    slots: int = 8
    """Conversations decoded together, each with its own KV cache."""
    context_tokens: int = 2048
    """Context of each slot (prompt and reply)."""
    threads: int = 2
    prompt_cache_mib: int = 0
    """Host memory for the prompts of conversations whose slot was given to another one. Off:
    measured here, it cost the first token ~15 ms and decoding ~10 % (docs/scaling.md)."""


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class LlamaServer:
    """A supervised llama.cpp server child (see the module docstring).

    Args:
        config: what the child runs.
        log_path: llama.cpp's log (rewritten at each start).
        ready_timeout_s: how long one start may take to load the model.
        on_change: called (from the supervisor thread) whenever `state` changes.
    """

    def __init__(
        self,
        config: ServerConfig,
        log_path: Path,
        *,
        ready_timeout_s: float = 120.0,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.on_change = on_change
        self.key = secrets.token_urlsafe(24)
        """The API key the child requires (loopback is reachable by every local user and page)."""
        self.state = "stopped"
        """``starting``, ``up``, ``restarting`` (it died, another is on its way), ``stopped``."""
        self.restarts = 0
        self.last_exit = ""
        """How the last child ended unasked, for people."""
        self._url: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._cond = threading.Condition()
        self._closing = False
        self._supervisor: threading.Thread | None = None

    # -- public ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the child and wait until it serves; RuntimeError (with the end of llama.cpp's
        log) if it cannot load the model. Then supervise it."""
        self._set("starting")
        self._spawn()
        self._supervisor = threading.Thread(
            target=self._supervise, name="llm-server-supervisor", daemon=True
        )
        self._supervisor.start()

    def wait_ready(self, timeout_s: float) -> str:
        """The server's base URL, waiting up to `timeout_s` while it (re)starts; RuntimeError
        if it is not back by then."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.state != "up" or self._proc is None or self._proc.poll() is not None:
                # (a child that has died but whose supervisor has not said so yet is not up)
                left = deadline - time.monotonic()
                if self._closing or left <= 0:
                    raise RuntimeError(
                        f"the LLM server is {self.state}"
                        + (f" (the last one {self.last_exit})" if self.last_exit else "")
                    )
                self._cond.wait(min(left, 0.05))
            assert self._url is not None
            return self._url

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def health(self) -> dict[str, Any]:
        """What /healthz shows of it."""
        return {"state": self.state, "restarts": self.restarts, "last_exit": self.last_exit}

    def close(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 5 s) and the supervisor."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            proc = self._proc
        if proc is not None:
            _stop(proc)
        if self._supervisor is not None:
            self._supervisor.join(timeout=10)
        self._set("stopped")

    # -- the child's life ------------------------------------------------------------------

    def _set(self, state: str) -> None:
        with self._cond:
            self.state = state
            self._cond.notify_all()
        if self.on_change is not None:
            self.on_change(state)

    def _spawn(self) -> None:
        """Start a child and wait for its address (RuntimeError if it never serves)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w") as logfile:
            proc = subprocess.Popen(
                [sys.executable, "-m", "voice_agent.backbone.llama_server"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=logfile,
                text=True,
                env={**os.environ, KEY_ENV: self.key},
            )
        with self._cond:
            self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(asdict(self.config)) + "\n")
        proc.stdin.flush()  # stdin stays open: the child stops when it closes
        timer = threading.Timer(self.ready_timeout_s, proc.kill)
        timer.start()
        said: dict[str, Any] = {}
        try:
            for line in proc.stdout:  # until its word (or its end); a runtime may print first
                with contextlib.suppress(ValueError):
                    said = json.loads(line)
                if isinstance(said, dict) and ("url" in said or "error" in said):
                    break
                said = {}
        finally:
            timer.cancel()
        if "url" not in said:
            _stop(proc)
            why = said.get("error") or _describe_exit(proc.poll())
            raise RuntimeError(f"the LLM server did not start ({why}): {self._log_tail()}")
        with self._cond:
            self._url = str(said["url"])
        self._set("up")
        log.info("LLM server (llama.cpp, pid %d) serves %s with %d slots",
                 proc.pid, self.config.model, self.config.slots)  # fmt: skip

    def _supervise(self) -> None:
        failures = 0
        while True:
            proc = self._proc
            assert proc is not None
            code = proc.wait()
            with self._cond:
                if self._closing:
                    return
                self.last_exit = _describe_exit(code)
                self.restarts += 1
            log.error("the LLM server (pid %d) %s; restarting it. %s",
                      proc.pid, self.last_exit, self._log_tail())  # fmt: skip
            self._set("restarting")
            while True:
                pause = _BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)]
                with self._cond:
                    if self._cond.wait_for(lambda: self._closing, pause):
                        return
                try:
                    self._spawn()
                    failures = 0
                    break
                except (RuntimeError, OSError) as exc:
                    failures += 1
                    log.error("restarting the LLM server failed: %s", exc)

    def _log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return f"(no log in {self.log_path})"
        tail = " | ".join(line.strip() for line in text[-lines:] if line.strip())
        return f"its log ({self.log_path}) ends: {tail or '(empty)'}"


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


# -- the server itself (in the child, or in `voice-agent llm-server`) ---------------------------


def serve(
    config: ServerConfig,
    key: str | None,
    stop: threading.Event,
    ready: Callable[[str], None],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
) -> None:
    """Run llama.cpp's server in this process until `stop` is set; `ready(url)` once it serves.

    Raises:
        RuntimeError: it could not start (a model it cannot load, a port in use); llama.cpp
            says why on stderr.
    """
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = config.model
    p.hostnames = [host]
    p.port = port  # 0: a free one
    p.api_keys = [key] if key else []
    p.n_parallel = config.slots
    p.n_ctx = config.context_tokens * config.slots  # split evenly between the slots
    p.cont_batching = True
    p.cache_prompt = True
    p.cache_ram_mib = config.prompt_cache_mib
    p.endpoint_slots = False  # it would show every conversation's prompt
    p.endpoint_metrics = True
    p.cpuparams.n_threads = config.threads
    p.cpuparams_batch.n_threads = config.threads
    p.n_threads_http = config.slots + 4  # a streaming reply holds an HTTP thread throughout
    server = xlc.Server(p)
    ready(str(server.listening_address))
    while not stop.wait(0.2):  # (a plain wait would hold off signal handlers)
        pass
    del server  # stops its loop and joins its threads


def standalone(config: ServerConfig, host: str, port: int, key: str | None) -> int:
    """`voice-agent llm-server`: the same server in the foreground, on a port of your choice,
    for session servers elsewhere (`engines.llm.engine: openai`); Ctrl-C or SIGTERM stops it."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def ready(url: str) -> None:
        print(f"voice-agent llm-server: serving {Path(config.model).name} with {config.slots} "
              f"slots at {url}/v1 (Ctrl-C to stop)", file=sys.stderr, flush=True)  # fmt: skip

    try:
        serve(config, key, stop, ready, host=host, port=port)
    except RuntimeError as exc:
        print(f"voice-agent llm-server: {exc} (llama.cpp's reason is above)", file=sys.stderr)
        return 1
    return 0


def _child() -> int:
    config = ServerConfig(**json.loads(sys.stdin.readline()))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle

    def watch_parent() -> None:
        sys.stdin.read()  # returns when the parent closes our stdin, or dies
        stop.set()

    def ready(url: str) -> None:
        threading.Thread(target=watch_parent, daemon=True).start()
        print(json.dumps({"url": url}), flush=True)

    try:
        serve(config, os.environ[KEY_ENV], stop, ready)
    except Exception as exc:  # reported to the parent, which says it in one line
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child())
