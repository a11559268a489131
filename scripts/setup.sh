#!/usr/bin/env bash
# Install everything cnnlab needs, idempotently: Debian's Fashion-MNIST package (where apt and
# root are available), a virtual environment in .venv, and cnnlab with its dev extras.
#   bash scripts/setup.sh         for using cnnlab
#   bash scripts/setup.sh test    also Debian's chromium, for the browser tests of `cnnlab serve`
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=${1:-use}

have_root_apt() { command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; }

apt_packages=()
[ -d /usr/share/datasets/fashion-mnist ] || apt_packages+=(dataset-fashion-mnist)
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_packages+=(python3-venv)
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
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
echo "setup: ready ($(.venv/bin/cnnlab --version))"
