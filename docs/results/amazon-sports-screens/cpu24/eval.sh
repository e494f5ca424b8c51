#!/usr/bin/env bash
# Issue 15, twenty-fourth session: export cpu24/train.sh's two runs (best weights, rounded to fp16 as the GPU
# arms were), evaluate them on the test users as the reproduction does (adaptation and fusion weight chosen
# on the 1,000 tuning validation users), and evaluate the recipe's export also with no test-time step.
#   SEED=0 OUT=runs/cpu24 bash docs/results/amazon-sports-screens/cpu24/eval.sh [ARM...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
S="${SEED:-0}"
OUT="$(realpath -m "${OUT:-runs/cpu24}")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
G=docs/results/amazon-sports-screens/gpu19
export METAREC_DATA_DIR="${METAREC_DATA_DIR:-$ROOT/../shared/data}" OMP_NUM_THREADS="${THREADS:-1}" WANDB_MODE=disabled
ARMS=("$@")
[ ${#ARMS[@]} -gt 0 ] || ARMS=(fomaml128-d05-b256 fomaml128-d05-b256-steps1)
for arm in "${ARMS[@]}"; do
  label="cpu-${arm#fomaml128-d05-}"  # cpu-b256, cpu-b256-steps1
  "$PY" -m metarec_dist.cli export --checkpoint "$OUT/runs/$arm-s$S" --out "$OUT/exports/$arm-s$S" --no-fuse
  "$PY" $G/half.py "$OUT/exports/$arm-s$S"/*.safetensors
  "$PY" $G/evaluate_exports.py --out "$OUT/eval" --model "$label=$OUT/exports/$arm" --fuse "$label" --seeds "$S"
  case "$arm" in sasrec*) continue ;; esac  # `sasrec` never adapts: its no-step evaluation is the one above
  "$PY" $G/evaluate_exports.py --out "$OUT/eval0" --model "$label=$OUT/exports/$arm" --steps 0 --seeds "$S"
done
