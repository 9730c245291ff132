"""Engine checks that crash, hang, fail or pass, run as `enginecheck`'s child process:
``python -m tests.engine_checks NAME...``. Each run of a check appends its name to the file
named by $CHECK_RUNS (so tests can count runs)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

from voice_agent.config import Settings
from voice_agent.enginecheck import child_main


def _ran(name: str) -> None:
    with open(os.environ["CHECK_RUNS"], "a") as f:
        f.write(f"{name}\n")


def passes(_: Settings) -> str:
    _ran("passes")
    return "fine"


def segfaults(_: Settings) -> str:
    _ran("segfaults")
    ctypes.string_at(0)
    return "unreachable"


def illegal(_: Settings) -> str:
    _ran("illegal")
    os.kill(os.getpid(), signal.SIGILL)
    return "unreachable"


def raises(_: Settings) -> str:
    _ran("raises")
    raise ValueError("the model file is empty")


def hangs(_: Settings) -> str:
    _ran("hangs")
    time.sleep(60)
    return "unreachable"


CHECKS = {
    "asr": passes,
    "llm": segfaults,
    "tts": illegal,
    "turns": raises,
    "hangs": hangs,
}

if __name__ == "__main__":
    sys.exit(child_main(CHECKS, sys.argv[1:], sys.stdin))
