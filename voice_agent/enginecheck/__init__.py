"""Every engine loaded and run once in a child process, before the server trusts it.

A native runtime built for another CPU does not raise: llama.cpp compiled with -march=native
dies with SIGSEGV (AMX) or SIGILL (AVX-512) on its first decode, with no Python traceback, and
takes the process that loaded it down. So `serve` and `talk` first run each engine they need in
a child process; a crash or a load error there becomes one line that names the engine, why it
failed and how to repair it. A passed check is remembered, so only the first start on a machine
(or after a rebuild) pays for it. `voice-agent doctor` runs every check, uncached.

`checks` holds what each engine's check runs; `runner` runs them in child processes
(``python -m voice_agent.enginecheck NAME...`` is the child) and remembers the passes.
"""

from voice_agent.enginecheck.checks import CHECKS, Check, needed
from voice_agent.enginecheck.runner import (
    TIMEOUT_S,
    EngineCheckFailed,
    Result,
    child_main,
    default_cache_file,
    ensure_engines_run,
    run_checks,
)

__all__ = [
    "CHECKS",
    "TIMEOUT_S",
    "Check",
    "EngineCheckFailed",
    "Result",
    "child_main",
    "default_cache_file",
    "ensure_engines_run",
    "needed",
    "run_checks",
]
