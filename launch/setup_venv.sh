#!/usr/bin/env bash
# Create .venv if missing and install the project with pinned versions (launch/constraints.txt).
# Sourced by quickstart.sh and test.sh. EXTRAS=test installs the test tools too.
# torch goes in first and pinned: an unpinned torch (or deepspeed pulling one) would fetch a multi-GB CUDA
# build on a CPU machine; set TORCH_INDEX_URL to choose a wheel index (e.g. the CPU or a CUDA index).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
EXTRAS="${EXTRAS:-}"
STAMP="$VENV/.metarec-installed${EXTRAS:+-$EXTRAS}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] || [ "$ROOT/launch/constraints.txt" -nt "$STAMP" ]; then
  echo "[setup] installing (pinned by launch/constraints.txt)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  TORCH_VERSION="$(grep '^torch==' "$ROOT/launch/constraints.txt" | cut -d= -f3)"
  "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  "$VENV/bin/python" -m pip install -q -c "$ROOT/launch/constraints.txt" -e "$ROOT${EXTRAS:+[$EXTRAS]}"
  touch "$STAMP"
fi
