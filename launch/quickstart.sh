#!/usr/bin/env bash
# Set up .venv if missing, then run the main job: distributed meta-training on Ray (2 CPU workers,
# DeepSpeed) on MovieLens 100K. Its summary ends with the validation users' cold-start NDCG@10 / Recall@10
# per support size K; `metarec evaluate --checkpoint runs/quickstart-ml100k` gives the test users' table.
# Data: $METAREC_DATA_DIR, else ../shared/data next to the repo if present, else ~/.cache/metarec
# (downloaded when online). Offline smoke run without data:  bash launch/quickstart.sh --set data.format=synthetic
# Extra arguments are passed to `metarec train` (e.g. --set train.meta_steps=50).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source launch/setup_venv.sh
if [ -z "${METAREC_DATA_DIR:-}" ] && [ -d "$ROOT/../shared/data" ]; then
  export METAREC_DATA_DIR="$ROOT/../shared/data"
fi
export WANDB_MODE="${WANDB_MODE:-offline}"
"$VENV/bin/metarec" train --config configs/quickstart.yaml "$@"
