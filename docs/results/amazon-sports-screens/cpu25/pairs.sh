#!/usr/bin/env bash
# Issue 15, twenty-fifth session: pair the recipe with AdamW weight decay 0.1 (cpu24/train.sh ARMS=wd01,
# evaluated by cpu24/eval.sh fomaml128-d05-b256-wd01, OUT=runs/cpu25) with `sasrec64` and the recipe trained on
# the GPU (runs/gpu19/eval), and at seed 0 also with the recipe trained on the CPU (runs/cpu24/eval: cpu-b256).
# The dropout 0.6 arm lost on validation users and is not evaluated on test users. At seed 0 also the fairness
# check: `sasrec64` with and without weight decay 0.1, trained on the CPU by cpu25/train_sasrec.sh and
# evaluated by cpu24/eval.sh sasrec64 sasrec64-wd01 (labels cpu-sasrec64, cpu-sasrec64-wd01).
#   SEEDS=0 OUT=runs/cpu25 CPU24=runs/cpu24 GPU19=runs/gpu19/eval bash docs/results/amazon-sports-screens/cpu25/pairs.sh
# SEEDS=0 writes cpu25/test-pairs-s0.json; SEEDS=0,1,2 (once seeds 1 and 2 are trained and evaluated)
# cpu25/test-pairs-3seeds.json.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
OUT="$(realpath -m "${OUT:-runs/cpu25}")" CPU24="$(realpath -m "${CPU24:-runs/cpu24}")"
GPU19="${GPU19:-runs/gpu19/eval}" SEEDS="${SEEDS:-0}"
args=(--seeds "$SEEDS"
  --arm "wd01=$OUT/eval:cpu-b256-wd01" --arm "wd01@0=$OUT/eval0:cpu-b256-wd01"
  --arm "wd01+cooc=$OUT/eval:cpu-b256-wd01+cooc" --arm "sasrec+cooc=$GPU19:sasrec+cooc"
  --arm "sasrec=$GPU19:sasrec" --arm "b256gpu=$GPU19:fomaml128" --arm "none128gpu=$GPU19:none128"
  --pair wd01=sasrec --pair wd01@0=sasrec --pair wd01=b256gpu --pair wd01=none128gpu --pair wd01=wd01@0
  --pair wd01+cooc=sasrec+cooc)
if [ "$SEEDS" = 0 ]; then
  json=test-pairs-s0.json
  args+=(--arm "b256cpu=$CPU24/eval:cpu-b256" --arm "b256cpu@0=$CPU24/eval0:cpu-b256"
    --pair wd01=b256cpu --pair wd01@0=b256cpu@0
    --arm "sasrec-cpu=$OUT/eval:cpu-sasrec64" --arm "sasrec-wd01-cpu=$OUT/eval:cpu-sasrec64-wd01"
    --pair sasrec-wd01-cpu=sasrec-cpu --pair wd01=sasrec-wd01-cpu --pair wd01=sasrec-cpu --pair sasrec-cpu=sasrec)
else
  json=test-pairs-3seeds.json
fi
"${PYTHON:-$ROOT/.venv/bin/python}" docs/results/amazon-sports-screens/pair_repros.py \
  --json "docs/results/amazon-sports-screens/cpu25/$json" "${args[@]}"
