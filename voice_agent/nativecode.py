"""Native code against this machine's CPU: what the CPU offers, and what a library demands.

llama.cpp compiled with `-march=native` carries the build machine's instruction set: AVX-512
dies with SIGILL on a CPU without it, and AMX tile code dies with a general protection fault
even on the build machine (Linux grants AMX per thread, and llama.cpp asks only on its main
thread). The project builds llama.cpp for a fixed, documented baseline (`BASELINE`) instead;
this module checks both sides of that contract.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

BASELINE = ("avx", "avx2", "fma", "f16c", "bmi2")
"""The x86 features the portable llama.cpp build uses (scripts/bootstrap.sh), as /proc/cpuinfo
names them."""

_CLASSES = {
    # AMX: tile configuration, loads, stores and the tile dot products.
    "amx": re.compile(
        r"\b(ldtilecfg|sttilecfg|tilerelease|tilezero|tileload\w*|tilestore\w*|"
        r"tdp\w+|tcmm\w+)\b"
    ),
    # AVX-512: its 512-bit registers, its upper sixteen vector registers, its mask registers.
    "avx512": re.compile(r"%zmm\d+|%[xy]mm(1[6-9]|2\d|3[01])\b|\{%k[1-7]\}"),
}


class ToolMissing(RuntimeError):
    """objdump (Debian package binutils) is not installed."""


@dataclass(frozen=True, slots=True)
class Cpu:
    """This machine's processor, as /proc/cpuinfo describes its first core."""

    model: str
    flags: frozenset[str]

    @property
    def missing(self) -> list[str]:
        """Baseline features this CPU lacks (the portable llama.cpp build cannot run here)."""
        return [f for f in BASELINE if f not in self.flags]

    @property
    def has_amx(self) -> bool:
        return "amx_tile" in self.flags

    @property
    def has_avx512(self) -> bool:
        return "avx512f" in self.flags


def cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> Cpu:
    """This machine's CPU (model name and feature flags); empty where /proc is not readable."""
    model, flags = "unknown", frozenset[str]()
    try:
        text = cpuinfo.read_text()
    except OSError:
        return Cpu(model, flags)
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return Cpu(model, flags)


def instructions_beyond_baseline(library: Path) -> dict[str, int]:
    """How many instructions of each class outside the baseline `library` contains:
    ``{"amx": n, "avx512": m}``, from a disassembly of its code.

    Raises:
        ToolMissing: objdump is not installed.
        RuntimeError: objdump could not read `library`.
    """
    objdump = shutil.which("objdump")
    if objdump is None:
        raise ToolMissing("objdump is not installed: apt-get install binutils")
    counts = dict.fromkeys(_CLASSES, 0)
    with subprocess.Popen(
        [objdump, "-d", "--no-show-raw-insn", str(library)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "\t" not in line:  # labels and headers, not instructions
                continue
            for name, pattern in _CLASSES.items():
                if pattern.search(line):
                    counts[name] += 1
        err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"objdump could not read {library}: {err.strip()}")
    return counts


def llama_libraries() -> list[Path]:
    """Every llama.cpp library the project can load: xllamacpp's (the `llama-server` engine)
    and llama-cpp-python's (libllama, libggml*: the `llama-cpp` engine), where installed.

    One path per library: a wheel installs ``libggml.so``, ``.so.0`` and ``.so.0.25.3`` as
    copies of one file, and the shortest name stands for them."""
    import importlib.util

    found: dict[tuple[str, int], Path] = {}
    for package, pattern in (("xllamacpp", "*.so"), ("llama_cpp", "lib/*.so*")):
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        paths = sorted(Path(spec.origin).parent.glob(pattern), key=lambda p: len(p.name))
        for path in paths:
            if path.is_file():
                found.setdefault((path.name.split(".so")[0], path.stat().st_size), path)
    return sorted(found.values())


def loaded_libraries(
    pattern: str = r"(ggml|llama)", maps: Path = Path("/proc/self/maps")
) -> list[Path]:
    """The shared libraries this process has mapped whose file name matches `pattern`."""
    found: set[Path] = set()
    for line in maps.read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and ".so" in parts[5]:
            path = Path(parts[5].strip())
            if re.search(pattern, path.name):
                found.add(path)
    return sorted(found)
