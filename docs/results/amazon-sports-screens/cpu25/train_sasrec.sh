#!/usr/bin/env bash
# Issue 15, twenty-fifth session: the fairness check of the weight-decay arm (cpu24/train.sh ARMS=wd01):
# does AdamW weight decay 0.1 lift `sasrec` as well? `sasrec64` (configs/coldstart-sasrec.yaml with Amazon
# Sports' data lines, as gpu19/sweep.sh trains it) with and without weight decay, side by side on the CPU, one
# torch thread each. Validation users only (early stopping); checkpoints every 500 steps: the same command
# resumes.
#   SEED=0 OUT=runs/cpu25 bash docs/results/amazon-sports-screens/cpu25/train_sasrec.sh
# ARMS picks the arms (default both; twenty-sixth session: ARMS=sasrec64 for seeds 1 and 2).
# then: SEED=0 OUT=runs/cpu25 bash docs/results/amazon-sports-screens/cpu24/eval.sh sasrec64 sasrec64-wd01
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
S="${SEED:-0}"
OUT="$(realpath -m "${OUT:-runs/cpu25}")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$OUT/logs"
export METAREC_DATA_DIR="${METAREC_DATA_DIR:-$ROOT/../shared/data}" WANDB_MODE=disabled PYTHONUNBUFFERED=1
one() {  # one NAME [--set ...]
  local name="$1-s$S"; shift
  "$PY" -m metarec_dist.cli train --config configs/coldstart-sasrec.yaml --set data.valid_frac=0.1 \
    --set data.test_frac=0.1 --set data.cache=false --set runtime.use_gpu=false \
    --set runtime.torch_threads="${THREADS:-1}" --set "runtime.storage_path=$OUT/runs" \
    --set data.format=recbole --set data.name=amazon-sports --set data.split=random \
    --set train.seed="$S" --set runtime.run_name="$name" "$@" \
    --json "$OUT/logs/$name.json" >> "$OUT/logs/$name.log" 2>&1
  echo "exit $?" >> "$OUT/logs/$name.log"
}
for arm in ${ARMS:-sasrec64 sasrec64-wd01}; do
  case "$arm" in
    sasrec64) one sasrec64 & ;;
    sasrec64-wd01) one sasrec64-wd01 --set optim.weight_decay=0.1 & ;;
    *) echo "unknown arm $arm (sasrec64, sasrec64-wd01)" >&2; exit 2 ;;
  esac
done
wait
