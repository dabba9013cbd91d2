#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian 12 machine: Debian -dev packages, then the pinned PyPI packages.
#
#   scripts/setup.sh          install what is missing, then verify that nothing is
#   scripts/setup.sh --plan   print what would be installed ("plan: apt ..." / "plan: pip ..."), install nothing
#
# The decisions are offline and exact: dpkg's database for Debian packages, and scripts/missing_requirements.py
# (importlib.metadata against the pins) for Python. An earlier version asked `pip --dry-run -q` and grepped for
# "Would install", which -q never prints, so it always concluded that torch was installed (issue 13);
# tests/setup/test_fresh_machine.py runs this script's decisions against a fresh venv and an empty dpkg database.
#
# Environment: PYTHON (default python3); IOMM_SETUP_DPKG_ADMINDIR (tests only: the dpkg database to ask).
set -euo pipefail
cd "$(dirname "$0")/.."

PLAN=0
case "${1:-}" in
  --plan) PLAN=1 ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--plan]" >&2; exit 2 ;;
esac

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libpng-dev libjpeg62-turbo-dev libwebp-dev libexif-dev   # image codecs + EXIF orientation
  libarchive-dev                                           # WebDataset tar shards
  libgloo-dev                                              # gloo's headers for c10d's ProcessGroupGloo
  nlohmann-json3-dev libtomlplusplus-dev libcli11-dev      # JSON, TOML configs, CLI
  libspdlog-dev libfmt-dev libcpp-httplib-dev              # logging, formatting, HTTP server
  libicu-dev                                               # tokenizer regex + NFC
  libssl-dev                                               # SHA-256 (model fingerprint)
  chromium chromium-driver                                 # the browser test of `iomm serve` (selenium)
  libgtest-dev libgmock-dev libbenchmark-dev               # tests and benchmarks
  clang-14 libclang-rt-14-dev                              # the fuzz targets (libFuzzer, ASan, UBSan: fuzz/)
  python3-venv                                             # the set-up test makes a fresh virtual environment
)
PY=${PYTHON:-python3}

missing_apt() {
  local admindir=() p
  [ -n "${IOMM_SETUP_DPKG_ADMINDIR:-}" ] && admindir=(--admindir="$IOMM_SETUP_DPKG_ADMINDIR")
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query "${admindir[@]}" -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

missing_pip() {
  $PY scripts/missing_requirements.py requirements-dev.txt
}

mapfile -t apt_missing < <(missing_apt)
if [ ${#apt_missing[@]} -gt 0 ]; then
  if [ $PLAN -eq 1 ]; then
    echo "plan: apt ${apt_missing[*]}"
  else
    echo "setup: installing Debian packages: ${apt_missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"
  fi
fi

# Python packages: checked after the Debian ones (python3-venv), with the interpreter the build and tests use.
pip_missing=$(missing_pip)
if [ -n "$pip_missing" ]; then
  if [ $PLAN -eq 1 ]; then
    echo "plan: pip $pip_missing"
  else
    echo "setup: installing Python packages (requirements-dev.txt): $pip_missing"
    $PY -m pip install --disable-pip-version-check -r requirements-dev.txt
  fi
fi

if [ $PLAN -eq 1 ]; then
  [ ${#apt_missing[@]} -eq 0 ] && [ -z "$pip_missing" ] && echo "plan: nothing to install"
  exit 0
fi

# Verify, so that a wrong decision can never pass silently: everything must be there now.
still=$(missing_apt | tr '\n' ' ')
[ -z "$still" ] || { echo "setup: Debian packages still missing after install: $still" >&2; exit 1; }
still=$(missing_pip)
[ -z "$still" ] || { echo "setup: Python packages still missing after install: $still (see pip's output above)" >&2; exit 1; }
$PY -c 'import torch; print("setup: ok; torch", torch.__version__, "at", torch.utils.cmake_prefix_path)'
