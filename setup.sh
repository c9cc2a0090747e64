#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine with Python 3.10+.
# torch is pinned to the CPU build first, so the open `torch>=2.4` range in
# pyproject.toml is already satisfied and pip does not pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install --quiet "torch==2.13.0"
python3 -m pip install --quiet -e ".[train,ui,dev,ray]"
if [ "${WITH_BROWSER:-0}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
      || echo "note: could not install chromium; the browser test will be skipped"
  fi
fi
