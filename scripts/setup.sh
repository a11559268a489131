#!/usr/bin/env bash
# Install everything cnnlab needs, idempotently: Debian's Fashion-MNIST package (where apt and
# root are available), a virtual environment in .venv, and cnnlab with its dev extras.
#   bash scripts/setup.sh         for using cnnlab
#   bash scripts/setup.sh test    also Debian's chromium, for the browser tests of `cnnlab serve`
# Without root or apt it skips the Debian packages (cnnlab then downloads the data into
# ~/.cache/cnnlab); $PYTHON picks the interpreter (default: the first of python3,
# python3.13, python3.12, python3.11 that is 3.11 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=${1:-use}

new_enough() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
if [ -z "${PYTHON:-}" ]; then
  for candidate in python3 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 && new_enough "$candidate"; then
      PYTHON=$candidate
      break
    fi
  done
fi
if [ -z "${PYTHON:-}" ] || ! new_enough "$PYTHON"; then
  echo "setup: error: cnnlab needs Python 3.11 or newer; install one, or point \$PYTHON at it" >&2
  exit 1
fi

have_root_apt() { command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; }

apt_packages=()
[ -d /usr/share/datasets/fashion-mnist ] || apt_packages+=(dataset-fashion-mnist)
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || apt_packages+=(python3-venv)
if [ "$purpose" = test ] && [ ! -x /usr/bin/chromium ]; then apt_packages+=(chromium); fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  if have_root_apt; then
    echo "setup: apt-get install ${apt_packages[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null; }; then
      echo "setup: warning: apt-get could not install ${apt_packages[*]}; cnnlab will look for the data elsewhere or download it" >&2
    fi
  else
    echo "setup: note: no root/apt-get here; skipping ${apt_packages[*]} (cnnlab downloads Fashion-MNIST into ~/.cache/cnnlab when needed)" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PYTHON"
  if "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    "$PYTHON" -m venv .venv
  elif command -v uv >/dev/null 2>&1; then  # no ensurepip (Debian without python3-venv)
    uv venv --seed --python "$PYTHON" .venv
  elif "$PYTHON" -m pip --version >/dev/null 2>&1; then
    "$PYTHON" -m pip install --user --quiet virtualenv && "$PYTHON" -m virtualenv --quiet .venv
  else
    echo "setup: error: $PYTHON cannot make a virtual environment (no ensurepip, pip or uv);" \
      "install Debian's python3-venv, or uv (pip install --user uv), then run this again" >&2
    exit 1
  fi
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# torch from PyPI on Linux x86-64 is a CUDA build: about 3 GB more with its nvidia-* packages.
# A machine without an NVIDIA driver gets PyTorch's CPU build (about 190 MB) first, where that
# index answers; pip then keeps it, since the `backends` extra pins only the version.
if [ "$(uname -sm)" = "Linux x86_64" ] && ! command -v nvidia-smi >/dev/null 2>&1 \
  && ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
  if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check --timeout 15 \
    --retries 1 --index-url https://download.pytorch.org/whl/cpu 'torch==2.13.0' >/dev/null 2>&1; then
    echo "setup: note: PyTorch's CPU index did not answer; pip takes torch from the configured index (on PyPI a CUDA build of about 3 GB)" >&2
  fi
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
echo "setup: ready ($(.venv/bin/cnnlab --version))"
