#!/usr/bin/env bash
# Issue 15, twenty-eighth session: cpu27/curve.sh (the recipe on MovieLens 100K, validated every 100 steps,
# NDCG@10 at each K in the log) with a checkpoint at every validation, all kept, and a patience of 20 so
# that it runs to its 2,000 steps: the weights each K liked best on validation users can then be evaluated
# on test users (cpu28/per_k.sh). Validation users only here. SEEDS runs seeds one after another.
#   SEEDS=0,1,2 OUT=/work/runs/ml28 bash docs/results/amazon-sports-screens/cpu28/ml_curve.sh
# ARM=wd01: the recipe with AdamW weight decay 0.1 (runs curve-wd01-s<seed>, logs curve-wd01-s<seed>.log).
# ARM=wd01s (twenty-ninth session): wd01 validated at the searched adaptation (train.eval_adaptation:
# searched): its early stopping should keep the step per_k.py's `tunedmean` chose offline for wd01.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
OUT="$(realpath -m "${OUT:-runs/ml28}")"
mkdir -p "$OUT"
export METAREC_DATA_DIR="${METAREC_DATA_DIR:-$ROOT/../shared/data}" WANDB_MODE=disabled
case "${ARM:-recipe}" in
  recipe) NAME=curve; EXTRA=() ;;
  wd01) NAME=curve-wd01; EXTRA=(--set optim.weight_decay=0.1) ;;
  wd01s) NAME=curve-wd01s; EXTRA=(--set optim.weight_decay=0.1 --set train.eval_adaptation=searched) ;;
  *) echo "unknown ARM ${ARM} (recipe, wd01, wd01s)" >&2; exit 2 ;;
esac
for S in ${SEEDS//,/ }; do
  "${PYTHON:-$ROOT/.venv/bin/python}" -m metarec_dist.cli --verbose train --config configs/coldstart-gpu.yaml \
    --set runtime.torch_threads=1 --set "runtime.storage_path=$OUT/runs" --set "runtime.run_name=$NAME-s$S" \
    --set train.seed="$S" --set train.log_every=100 --set train.eval_every=100 --set train.early_stop_patience=20 \
    --set train.meta_steps=2000 --set checkpoint.every=100 --set checkpoint.keep=25 \
    --set checkpoint.resume=false "${EXTRA[@]}" > "$OUT/$NAME-s$S.log" 2>&1
  grep "validation at meta-step" "$OUT/$NAME-s$S.log"
done
