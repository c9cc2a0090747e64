#!/usr/bin/env bash
# Sets up a virtual environment in .venv with this package and its extras.
#
#   ./setup.sh                      everything: train, ui, ray, dev (tests)
#   EXTRAS=ui ./setup.sh            a line PC: the inspection runtime and the dashboard
#   EXTRAS= ./setup.sh              the bare runtime (numpy, OpenCV, onnxruntime)
#   WITH_BROWSER=1 ./setup.sh       also Debian's Chromium, for the browser test
#
# A venv works on distribution Pythons that refuse system-wide installs (PEP 668).
# torch comes from PyTorch's CPU wheel index when it answers (a plain `torch`
# requirement on the default index is the multi-GB CUDA build); when it does not
# answer within a few seconds, from the default index and any local wheels.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS-train,ui,ray,dev}
TORCH_VERSION=2.13.0
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)

index_answers() {  # bounded as a whole: the read timeout below does not cover a hanging DNS lookup
  timeout 10 "$VENV/bin/python" - "$1" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=5)
except Exception:
    sys.exit(1)
PY
}

case ",$EXTRAS," in
  *,train,*)
    if index_answers "$TORCH_INDEX"; then
      "${pip[@]}" install --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION"
    else
      echo "setup: $TORCH_INDEX did not answer; taking torch from the default index" >&2
      "${pip[@]}" install "torch==$TORCH_VERSION"
    fi
    ;;
esac

if [ -n "$EXTRAS" ]; then
  "${pip[@]}" install -e ".[$EXTRAS]"
else
  "${pip[@]}" install -e .
fi

if [ "${WITH_BROWSER:-0}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
      || echo "setup: could not install chromium; the browser test will be skipped" >&2
  fi
fi
echo "setup: ready; run commands with $VENV/bin/anomaly or after 'source $VENV/bin/activate'" >&2
