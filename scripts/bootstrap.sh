#!/usr/bin/env bash
# Idempotent set-up of everything voice-agent needs on a fresh Debian machine:
# system packages (apt), a local virtual environment (.venv), and the project with its extras.
# A second run with nothing changed takes well under a second.
#
#   scripts/bootstrap.sh [EXTRAS]      e.g. scripts/bootstrap.sh dev,llama-cpp
#
# Nothing compiles by default: the LLM runs in llama.cpp's server from the prebuilt, portable
# xllamacpp wheel. The `llama-cpp` extra (llama.cpp inside the process, llama-cpp-python) does
# compile, and is built here for a fixed instruction-set baseline, x86-64 with AVX, AVX2, FMA,
# F16C and BMI2, never for the build machine: llama.cpp's default (-DGGML_NATIVE=ON, i.e.
# -march=native) makes a library that dies with SIGILL on a CPU without the build machine's
# AVX-512, and with a general protection fault on a CPU with AMX, the build machine included.
# To build it for your own machine only, knowing it will not run elsewhere:
#   VOICE_AGENT_LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON" scripts/bootstrap.sh dev,llama-cpp
# Each set of flags gets its own wheel folder under ~/.cache/voice-agent/wheels, built once and
# reused; a wheel built with other flags is never picked up (pip's own wheel cache ignores
# CMAKE_ARGS, so it is not used for this package).
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${1:-dev}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
SYSTEM_PACKAGES_FILE="scripts/system-packages.txt"
LLAMA_PORTABLE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
LLAMA_ARGS="${VOICE_AGENT_LLAMA_CMAKE_ARGS:-$LLAMA_PORTABLE_ARGS}"

say() { printf '\033[1mbootstrap:\033[0m %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# 1. Python
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "voice-agent needs Python >= 3.11; '$PYTHON' is $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11."

# 2. System packages (Debian/Ubuntu). Each line of the list: package, then what needs it.
missing=()
while read -r pkg _; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done < "$SYSTEM_PACKAGES_FILE"
if ((${#missing[@]})); then
  say "installing system packages: ${missing[*]}"
  if ! command -v apt-get >/dev/null; then
    die "apt-get not found: install these packages with your system's package manager: ${missing[*]} (see $SYSTEM_PACKAGES_FILE for what needs each)"
  fi
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  if [[ -n "$SUDO" ]] && ! sudo -n true 2>/dev/null; then
    die "need root to install ${missing[*]}: run 'sudo apt-get install -y ${missing[*]}' once, then run this again"
  fi
  $SUDO apt-get update -qq || die "apt-get update failed (no network to the Debian mirror?): install ${missing[*]} by hand"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed: install them by hand, then run this again"
fi

# 3. Virtual environment
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi

# 4. llama.cpp inside the process (extra llama-cpp), portable (see the top of this file): one
#    wheel per version, flags and Python, built once.
llama_key=""
find_links=()
if [[ ",$EXTRAS," == *",llama-cpp,"* ]]; then
  LLAMA_VERSION="$(sed -n 's/.*"llama-cpp-python\(\[[a-z,]*\]\)\{0,1\}==\([0-9.]*\)".*/\2/p' pyproject.toml | head -n1)"
  [[ -n "$LLAMA_VERSION" ]] || die "no llama-cpp-python==VERSION pin found in pyproject.toml"
  py_tag="$("$VENV/bin/python" -c 'import sys; print(sys.implementation.cache_tag)')"
  llama_key="$(printf '%s|%s|%s' "$LLAMA_VERSION" "$LLAMA_ARGS" "$py_tag" | sha256sum | cut -c1-12)"
  WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/voice-agent/wheels/llama-cpp-python-$LLAMA_VERSION-$llama_key"
  if ! compgen -G "$WHEELS/llama_cpp_python-*.whl" >/dev/null; then
    say "building llama.cpp (llama-cpp-python $LLAMA_VERSION) once, for: $LLAMA_ARGS"
    say "  (about 5 minutes on 2 cores; kept in $WHEELS)"
    rm -rf "$WHEELS.partial" && mkdir -p "$WHEELS.partial"
    t0=$SECONDS
    CMAKE_ARGS="$LLAMA_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
      "$VENV/bin/python" -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python \
        -w "$WHEELS.partial" "llama-cpp-python==$LLAMA_VERSION" \
      || die "building llama-cpp-python failed (it needs a C++ compiler: apt-get install build-essential)"
    rm -rf "$WHEELS" && mv "$WHEELS.partial" "$WHEELS"
    say "llama.cpp built in $((SECONDS - t0)) s"
  fi
  if [[ ! -f "$VENV/.llama-$llama_key" ]]; then
    say "installing the llama.cpp build $llama_key into $VENV"
    "$VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$WHEELS"/llama_cpp_python-*.whl
    rm -f "$VENV"/.llama-* "$VENV"/.voice-agent-*
    touch "$VENV/.llama-$llama_key"
  fi
  find_links=(--find-links "$WHEELS")
fi

# 5. The project and its dependencies, re-installed only when what decides them changes (a
#    stamp per set of extras, so `make run` and `make test` do not undo each other).
stamp_src="$(cat pyproject.toml "$SYSTEM_PACKAGES_FILE"; echo "extras=$EXTRAS llama=$llama_key")"
stamp="$VENV/.voice-agent-$(printf '%s' "$stamp_src" | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  say "installing voice-agent[$EXTRAS] into $VENV (the first time downloads ~1 GB of models)"
  t0=$SECONDS
  "$VENV/bin/python" -m pip install --progress-bar off "${find_links[@]}" -e ".[$EXTRAS]"
  touch "$stamp"
  say "installed in $((SECONDS - t0)) s"
fi
