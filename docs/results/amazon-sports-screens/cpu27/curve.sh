#!/usr/bin/env bash
# Issue 15, twenty-seventh session: does K = 1 peak later than the mean criterion that early stopping
# watches? configs/coldstart-gpu.yaml on MovieLens 100K (its own data: lines), validated every 100 steps
# with a patience of 10 so that the curve runs on past the usual stop; the log line of each validation now
# names NDCG@10 at every K (train/early_stop.py: criterion_parts; --verbose shows it). Validation users only.
#   SEED=0 OUT=/work/runs/ml27 bash docs/results/amazon-sports-screens/cpu27/curve.sh   # -> OUT/curve-s0.log
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
S="${SEED:-0}"
OUT="$(realpath -m "${OUT:-runs/ml27}")"
mkdir -p "$OUT"
export METAREC_DATA_DIR="${METAREC_DATA_DIR:-$ROOT/../shared/data}" WANDB_MODE=disabled
"${PYTHON:-$ROOT/.venv/bin/python}" -m metarec_dist.cli --verbose train --config configs/coldstart-gpu.yaml \
  --set runtime.torch_threads=1 --set "runtime.storage_path=$OUT/runs" --set "runtime.run_name=curve-s$S" \
  --set train.seed="$S" --set train.log_every=100 --set train.eval_every=100 --set train.early_stop_patience=10 \
  --set train.meta_steps=2000 --set checkpoint.resume=false > "$OUT/curve-s$S.log" 2>&1
grep "validation at meta-step" "$OUT/curve-s$S.log"
