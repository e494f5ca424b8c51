#!/usr/bin/env bash
# Issue 15, twenty-fifth session: pair the regularisation arms (cpu24/train.sh ARMS="wd01 drop06", evaluated
# by cpu24/eval.sh, seed 0, OUT=runs/cpu25) with the recipe trained the same way in the twenty-fourth session
# (runs/cpu24/eval: cpu-b256) and with `sasrec64` (runs/gpu19/eval, seed 0). Writes cpu25/test-pairs-s0.json.
#   OUT=runs/cpu25 CPU24=runs/cpu24 GPU19=runs/gpu19/eval bash docs/results/amazon-sports-screens/cpu25/pairs.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
OUT="$(realpath -m "${OUT:-runs/cpu25}")" CPU24="$(realpath -m "${CPU24:-runs/cpu24}")"
GPU19="${GPU19:-runs/gpu19/eval}"
"${PYTHON:-$ROOT/.venv/bin/python}" docs/results/amazon-sports-screens/pair_repros.py \
  --json docs/results/amazon-sports-screens/cpu25/test-pairs-s0.json --seeds 0 \
  --arm "wd01=$OUT/eval:cpu-b256-wd01" --arm "drop06=$OUT/eval:cpu-b256-drop06" \
  --arm "b256cpu=$CPU24/eval:cpu-b256" --arm "sasrec=$GPU19:sasrec" \
  --arm "wd01@0=$OUT/eval0:cpu-b256-wd01" --arm "drop06@0=$OUT/eval0:cpu-b256-drop06" \
  --arm "b256cpu@0=$CPU24/eval0:cpu-b256" \
  --pair wd01=b256cpu --pair drop06=b256cpu --pair wd01=sasrec --pair drop06=sasrec \
  --pair wd01@0=b256cpu@0 --pair drop06@0=b256cpu@0
