#!/usr/bin/env bash
# Reproduce docs/results.md: the MovieLens 100K cold-start comparison (popularity, sasrec, none,
# none+finetune, fomaml, reptile; 5 seeds each), about 15 minutes on 2 CPU cores.
#   bash launch/reproduce_ml100k.sh [--seeds 0,1,2,3,4] [--jobs 2] [--out runs/ml100k-repro]
# Data: $METAREC_DATA_DIR, else ../shared/data next to the repo if present, else ~/.cache/metarec
# (downloaded when online). Writes docs/results.json, docs/results_ndcg_vs_k.png and the generated
# section of docs/results.md; runs and per-user results go to runs/ml100k-repro/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ ! -x .venv/bin/python ]; then
  source launch/setup_venv.sh
fi
if [ -z "${METAREC_DATA_DIR:-}" ] && [ -d "$ROOT/../shared/data" ]; then
  export METAREC_DATA_DIR="$(cd "$ROOT/../shared/data" && pwd)"
fi
export WANDB_MODE="${WANDB_MODE:-offline}" PYTHONUNBUFFERED=1
# Two single-threaded training processes use two cores better than one process with two threads.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
exec .venv/bin/python -m metarec_dist.eval.reproduce \
  --method fomaml=configs/ml100k.yaml \
  --method reptile=configs/ml100k-reptile.yaml \
  --method none=configs/ml100k-none.yaml \
  --method sasrec=configs/ml100k-sasrec.yaml \
  --finetune none \
  --baseline none \
  --seeds 0,1,2,3,4 \
  --jobs 2 \
  "$@"
