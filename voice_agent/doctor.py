"""`voice-agent doctor`: will the engines run on this machine, and if not, why and what to do.

It looks at the CPU, at the native code of llama.cpp (instructions beyond the portable baseline),
at the model files in use, and then runs every engine once, each in a child process, so one that
crashes is named instead of taking the doctor down with it.
"""

from __future__ import annotations

from typing import TextIO

from voice_agent import enginecheck, nativecode
from voice_agent.admission import session_limit
from voice_agent.config import Settings
from voice_agent.modelfiles import ModelStore


def _cpu_line(cpu: nativecode.Cpu) -> tuple[str, bool]:
    has = [f for f in nativecode.BASELINE if f in cpu.flags]
    extras = ["AVX-512" if cpu.has_avx512 else "no AVX-512", "AMX" if cpu.has_amx else "no AMX"]
    line = f"{cpu.model}: {' '.join(has) or 'no baseline features'}; {', '.join(extras)}"
    if cpu.missing:
        return f"{line}; lacks {', '.join(cpu.missing)} (the portable llama.cpp needs them)", False
    return line, True


def _library_lines(cpu: nativecode.Cpu) -> tuple[list[str], bool]:
    """One line per llama.cpp library: what it holds beyond the baseline, and whether that
    runs here."""
    libraries = nativecode.llama_libraries()
    if not libraries:
        return ["neither xllamacpp nor llama-cpp-python is installed"], True
    lines, ok = [], True
    for lib in libraries:
        try:
            counts = nativecode.instructions_beyond_baseline(lib)
        except nativecode.ToolMissing as exc:
            return [str(exc)], True
        except RuntimeError as exc:
            lines.append(f"{lib.name}: {exc}")
            ok = False
            continue
        rebuild = "rebuild it portable with scripts/bootstrap.sh"
        if counts["amx"]:
            ok = False
            lines.append(
                f"{lib.name}: {counts['amx']} AMX instructions, which crash on any CPU "
                f"with AMX: {rebuild}"
            )
        elif counts["avx512"] and not cpu.has_avx512:
            ok = False
            lines.append(
                f"{lib.name}: {counts['avx512']} AVX-512 instructions this CPU lacks: {rebuild}"
            )
        elif counts["avx512"]:
            lines.append(
                f"{lib.name}: {counts['avx512']} AVX-512 instructions: it runs here, "
                "not on CPUs without AVX-512 (not the portable build)"
            )
        else:
            lines.append(f"{lib.name}: portable (no AMX, no AVX-512)")
    return lines, ok


def _models_in_use(settings: Settings) -> list[str]:
    """The catalog models the settings load (not the files people point at themselves)."""
    e = settings.engines
    ids = [] if e.asr.model_path else [e.asr.model]
    local = e.llm.engine in ("llama-server", "llama-cpp")
    if local and e.llm.model_path is None and e.backbone != "realtime":
        ids.append(e.llm.model)
    if e.tts.piper_model_path is None and e.backbone != "realtime":
        ids.append(e.tts.piper_model)
    return ids


def doctor(settings: Settings, out: TextIO) -> int:
    """Print the diagnosis; 0 when everything the settings use runs here, else 1."""
    healthy = True
    cpu = nativecode.cpu()
    line, ok = _cpu_line(cpu)
    healthy &= ok or settings.engines.llm.engine not in ("llama-server", "llama-cpp")
    print(f"CPU        {line}", file=out)
    lines, ok = _library_lines(cpu)
    healthy &= ok
    for i, text in enumerate(lines):
        print(f"{'llama.cpp' if i == 0 else '':<10} {text}", file=out)

    store = ModelStore(cache_dir=settings.engines.models_cache)
    for i, model_id in enumerate(_models_in_use(settings)):
        check = store.verify(model_id)
        healthy &= check.ok
        state = "ok" if check.ok else "FAILED"
        print(f"{'models' if i == 0 else '':<10} {model_id}: {state} ({check.detail})", file=out)

    limit = session_limit(settings)
    print(f"sessions   up to {limit.sessions} at once ({limit.why})", file=out)
    print("engines    each loaded and run once, in a child process:", file=out, flush=True)

    def show(r: enginecheck.Result) -> None:
        mark = "ok" if r.ok else "FAILED"
        print(f"  {mark:<7} {r.what}: {r.detail} ({r.seconds:.1f} s)", file=out, flush=True)
        if not r.ok:
            if r.repair:
                print(f"          repair: {r.repair}", file=out)
            for tail in r.output.strip().splitlines()[-12:]:
                print(f"          | {tail}", file=out)

    results = enginecheck.run_checks(settings, enginecheck.needed(settings), on_result=show)
    healthy &= all(r.ok for r in results)
    print("all good" if healthy else "problems found (above)", file=out)
    return 0 if healthy else 1
