"""The portable build: the llama.cpp the project loads runs on any x86-64 CPU with the baseline
(no AMX, no AVX-512 code in it, whatever machine built it), and an engine that crashes on this
machine is named with its repair instead of killing the server without a word.

The AMX crash cannot show on a CPU without AMX, so the build is judged by its code: a library
that would die on another machine fails here too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.servers import console_script
from voice_agent import enginecheck, nativecode
from voice_agent.config import Settings

REPO = Path(__file__).resolve().parents[1]
CRASHING_LLAMA = REPO / "tests" / "crashing_llama"


# -- the scanner ------------------------------------------------------------------------------


def _assemble(tmp_path: Path, name: str, code: str) -> Path:
    src, obj = tmp_path / f"{name}.s", tmp_path / f"{name}.o"
    src.write_text(textwrap.dedent(code))
    subprocess.run(["as", "-o", str(obj), str(src)], check=True)
    return obj


def test_the_scanner_finds_amx_and_avx512_and_passes_avx2(tmp_path: Path) -> None:
    amx = _assemble(
        tmp_path,
        "amx",
        """
        ldtilecfg (%rax)
        tileloadd (%rax,%rcx,1), %tmm0
        tdpbssd %tmm2, %tmm1, %tmm0
        tilerelease
        """,
    )
    avx512 = _assemble(
        tmp_path,
        "avx512",
        """
        vaddps %zmm0, %zmm1, %zmm2
        vmovups %ymm17, (%rax)
        vaddps %ymm0, %ymm1, %ymm2{%k1}
        """,
    )
    avx2 = _assemble(
        tmp_path,
        "avx2",
        """
        vfmadd231ps %ymm0, %ymm1, %ymm2
        vcvtph2ps %xmm0, %ymm1
        pdep %rax, %rbx, %rcx
        """,
    )
    assert nativecode.instructions_beyond_baseline(amx) == {"amx": 4, "avx512": 0}
    assert nativecode.instructions_beyond_baseline(avx512) == {"amx": 0, "avx512": 3}
    assert nativecode.instructions_beyond_baseline(avx2) == {"amx": 0, "avx512": 0}


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx avx2 fma f16c bmi2 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Xeon\nflags\t\t: fpu\n"
    )
    cpu = nativecode.cpu(info)
    assert cpu.model == "Xeon" and cpu.has_amx and not cpu.has_avx512 and cpu.missing == []
    info.write_text("model name\t: Old\nflags\t\t: fpu sse4_2 avx\n")
    assert nativecode.cpu(info).missing == ["avx2", "fma", "f16c", "bmi2"]


# -- the build the project loads --------------------------------------------------------------

_GENERATE = """
import json, sys
from voice_agent import nativecode
from voice_agent.backbone.base import GenerationParams
from voice_agent.engines import load_llm
from voice_agent.config import Settings
from voice_agent.modelfiles import ModelStore

s = Settings().engines.llm.model_copy(update={"engine": sys.argv[1], "model": "smollm2-135m"})
llm = load_llm(s, ModelStore(progress=None))
text = "".join(llm.stream([{"role": "user", "content": "Say hi."}], GenerationParams(max_tokens=6)))
llm.close()
print(json.dumps({"text": text, "loaded": [str(p) for p in nativecode.loaded_libraries()]}))
"""


def _generate(engine: str) -> dict[str, object]:
    """One short generation in a child process (the first decode is where a native build for
    another CPU dies), with the llama.cpp libraries that process had loaded."""
    done = subprocess.run(
        [sys.executable, "-c", _GENERATE, engine], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-3000:]}"
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    assert str(result["text"]).strip()
    return result


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["llama-server", "llama-cpp"])
def test_a_short_generation_in_a_child_process_exits_0(engine: str) -> None:
    _generate(engine)


@pytest.mark.slow
def test_no_llama_cpp_library_the_project_loads_holds_code_beyond_the_baseline() -> None:
    in_process = [Path(p) for p in _generate("llama-cpp")["loaded"]]  # type: ignore[attr-defined]
    assert any("ggml-cpu" in p.name for p in in_process), in_process  # the CPU kernels
    libraries = nativecode.llama_libraries()  # what doctor scans: these, and xllamacpp's
    names = {(p.name.split(".so")[0], p.stat().st_size) for p in libraries}
    assert all((p.name.split(".so")[0], p.stat().st_size) in names for p in in_process)
    assert any(p.parent.name == "xllamacpp" for p in libraries)
    native = os.environ.get("VOICE_AGENT_LLAMA_CMAKE_ARGS")  # a build for this machine only
    for lib in libraries:
        counts = nativecode.instructions_beyond_baseline(lib)
        assert counts["amx"] == 0, f"{lib} has AMX code: it dies on CPUs with AMX"
        if not native or lib.parent.name == "xllamacpp":
            assert counts["avx512"] == 0, f"{lib} has AVX-512 code: SIGILL on CPUs without it"


# -- engine checks in child processes ---------------------------------------------------------


IN_PROCESS = Settings.model_validate({"engines": {"llm": {"engine": "llama-cpp"}}})


def _checks(tmp_path: Path, names: list[str], **kw: object) -> list[enginecheck.Result]:
    os.environ["CHECK_RUNS"] = str(tmp_path / "runs")
    cmd = [sys.executable, "-m", "tests.engine_checks"]
    try:
        return enginecheck.run_checks(IN_PROCESS, names, command=cmd, **kw)  # type: ignore[arg-type]
    finally:
        del os.environ["CHECK_RUNS"]


def test_a_crash_names_the_engine_the_signal_and_the_repair_and_the_rest_still_run(
    tmp_path: Path,
) -> None:
    asr, llm, tts, turns = _checks(tmp_path, ["asr", "llm", "tts", "turns"])
    assert asr.ok and asr.detail == "fine"
    assert not llm.ok and llm.detail == "crashed (SIGSEGV) in its test run"
    assert llm.what == "LLM (llama-cpp, qwen2.5-0.5b)"
    if not nativecode.cpu().missing:
        assert "rebuild it portable with scripts/bootstrap.sh" in llm.repair
    assert "Fatal Python error: Segmentation fault" in llm.output  # faulthandler's stack
    assert not tts.ok and "SIGILL" in tts.detail and "onnxruntime" in tts.repair
    assert not turns.ok and turns.detail == "failed: ValueError: the model file is empty"
    assert (tmp_path / "runs").read_text().split() == ["passes", "segfaults", "illegal", "raises"]
    line = enginecheck.EngineCheckFailed([llm, turns]).args[0]
    assert "\n" not in line and line.startswith("LLM (llama-cpp, qwen2.5-0.5b): crashed (SIGSEGV)")


def test_a_check_that_hangs_is_stopped_and_named(tmp_path: Path) -> None:
    hangs, asr = _checks(tmp_path, ["hangs", "asr"], timeout_s=1.0)
    assert not hangs.ok and hangs.detail == "did not finish its test run in 1 s"
    assert hangs.seconds < 30
    assert asr.ok  # in a fresh child


def test_a_passed_check_is_remembered_and_a_failed_one_is_not(tmp_path: Path) -> None:
    cache = tmp_path / "checks.json"
    first = _checks(tmp_path, ["asr", "turns"], cache=cache)
    again = _checks(tmp_path, ["asr", "turns"], cache=cache)
    assert [r.cached for r in first] == [False, False]
    assert [(r.ok, r.cached) for r in again] == [(True, True), (False, False)]
    assert (tmp_path / "runs").read_text().split() == ["passes", "raises", "raises"]
    other = Settings.model_validate(
        {"engines": {"asr": {"threads": 1}, "llm": {"engine": "llama-cpp"}}}
    )  # another identity
    os.environ["CHECK_RUNS"] = str(tmp_path / "runs")
    try:
        cmd = [sys.executable, "-m", "tests.engine_checks"]
        (r,) = enginecheck.run_checks(other, ["asr"], cache=cache, command=cmd)
    finally:
        del os.environ["CHECK_RUNS"]
    assert r.ok and not r.cached


# -- through the command line, with the real engines ------------------------------------------


def _with_crashing_llama() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(CRASHING_LLAMA), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


@pytest.mark.slow
def test_serve_says_in_one_line_which_engine_crashed_and_exits_1() -> None:
    done = subprocess.run(
        [console_script(), "serve", "--port", "0", "--set", "engines.llm.engine=llama-cpp"],
        capture_output=True,
        text=True,
        env=_with_crashing_llama(),
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "voice-agent serve: LLM (llama-cpp, qwen2.5-0.5b): crashed (SIGSEGV) in its test run; "
    ), done.stderr[-3000:]
    assert "scripts/bootstrap.sh" in last or "lacks" in last
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_doctor_runs_every_engine_and_names_the_one_that_crashes() -> None:
    good = subprocess.run([console_script(), "doctor"], capture_output=True, text=True, timeout=600)
    assert good.returncode == 0, good.stdout + good.stderr
    for engine in ("ASR (whisper-tiny-en)", "LLM (llama-server, qwen2.5-0.5b)", "TTS (piper"):
        assert f"  ok      {engine}" in good.stdout, good.stdout
    assert "portable (no AMX, no AVX-512)" in good.stdout
    assert good.stdout.rstrip().endswith("all good")

    bad = subprocess.run(
        [console_script(), "doctor", "--set", "engines.llm.engine=llama-cpp"],
        capture_output=True,
        text=True,
        env=_with_crashing_llama(),
        timeout=600,
    )
    assert bad.returncode == 1
    assert "  FAILED  LLM (llama-cpp, qwen2.5-0.5b): crashed (SIGSEGV)" in bad.stdout, bad.stdout
    assert "repair: " in bad.stdout and "  ok      TTS (piper" in bad.stdout
