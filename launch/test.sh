#!/usr/bin/env bash
# Set up .venv (with test extras) if missing, then run the whole test suite: unit tests, then the
# integration tests (a real Ray local cluster on 127.0.0.1, DeepSpeed with gloo, W&B offline).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EXTRAS=test source launch/setup_venv.sh
export WANDB_MODE=offline RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
# Keep caches of the run inside a temp dir so a test run never reads or pollutes the user's.
export METAREC_CACHE_DIR="${METAREC_CACHE_DIR:-$(mktemp -d)}"
exec "$VENV/bin/python" -m pytest -q --timeout=900 "$@"
