#!/usr/bin/env bash
# Issue 15, twenty-eighth session: the per-K validation curve of the recipe (configs/coldstart-gpu.yaml) on
# Amazon Sports (reproduce's data: lines), as cpu27/curve.sh drew it on MovieLens 100K, where K = 1 kept
# rising long after the mean criterion peaked. Validated every 250 steps on the recipe's 1,000 validation
# users with a patience of 20, so that it runs on past the recipe's stop; the schedule is the recipe's own
# (5,000 steps, cosine), so the run can be stopped by hand once the curve is drawn. A checkpoint at every
# validation, all kept: the weights each K liked best can then be evaluated (cpu28/per_k.sh). Validation
# users only. One torch thread (1.4 s a step on the 2-core machine).
#   SEED=0 OUT=/work/runs/cpu28 bash docs/results/amazon-sports-screens/cpu28/curve_amazon.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
S="${SEED:-0}"
OUT="$(realpath -m "${OUT:-runs/cpu28}")"
mkdir -p "$OUT"
export METAREC_DATA_DIR="${METAREC_DATA_DIR:-$ROOT/../shared/data}" WANDB_MODE=disabled PYTHONUNBUFFERED=1
"${PYTHON:-$ROOT/.venv/bin/python}" -m metarec_dist.cli --verbose train --config configs/coldstart-gpu.yaml \
  --set data.format=recbole --set data.name=amazon-sports --set data.split=random --set data.cache=false \
  --set runtime.torch_threads=1 --set "runtime.storage_path=$OUT/runs" --set "runtime.run_name=amazon-curve-s$S" \
  --set train.seed="$S" --set train.eval_every=250 --set train.early_stop_patience=20 \
  --set checkpoint.every=250 --set checkpoint.keep=20 --set checkpoint.resume=false \
  > "$OUT/amazon-curve-s$S.log" 2>&1
grep "validation at meta-step" "$OUT/amazon-curve-s$S.log"
