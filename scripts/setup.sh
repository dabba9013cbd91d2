#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian 12 machine: Debian -dev packages, then the pinned PyPI packages.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libpng-dev libjpeg62-turbo-dev libwebp-dev libexif-dev   # image codecs + EXIF orientation
  libarchive-dev                                           # WebDataset tar shards
  nlohmann-json3-dev libtomlplusplus-dev libcli11-dev      # JSON, TOML configs, CLI
  libspdlog-dev libfmt-dev libcpp-httplib-dev              # logging, formatting, HTTP server
  libicu-dev                                               # tokenizer regex + NFC
  libgtest-dev libgmock-dev libbenchmark-dev               # tests and benchmarks
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if ! $PY -m pip install -q --disable-pip-version-check -r requirements-dev.txt --dry-run 2>/dev/null | grep -q "Would install"; then
  echo "setup: Python packages already satisfy requirements-dev.txt"
else
  echo "setup: installing Python packages (requirements-dev.txt)"
  $PY -m pip install -q --disable-pip-version-check -r requirements-dev.txt
fi
$PY -c 'import torch; print("setup: torch", torch.__version__, "cmake prefix", torch.utils.cmake_prefix_path)'
