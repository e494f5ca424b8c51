#!/usr/bin/env bash
# Issue 15, twenty-fourth session: pair cpu24/eval.sh's per-user results (seed 0) with seed 0 of the
# nineteenth session's GPU arms (runs/gpu19/eval: the recipe, `sasrec64`; runs/gpu20/eval0-amz: the recipe
# with no test-time step). Writes cpu24/test-pairs-s0.json.
#   OUT=runs/cpu24 GPU19=runs/gpu19/eval GPU20=runs/gpu20/eval0-amz bash docs/results/amazon-sports-screens/cpu24/pairs.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
OUT="$(realpath -m "${OUT:-runs/cpu24}")"
GPU19="${GPU19:-runs/gpu19/eval}" GPU20="${GPU20:-runs/gpu20/eval0-amz}"
"${PYTHON:-$ROOT/.venv/bin/python}" docs/results/amazon-sports-screens/pair_repros.py \
  --json docs/results/amazon-sports-screens/cpu24/test-pairs-s0.json --seeds 0 \
  --arm "b256cpu=$OUT/eval:cpu-b256" --arm "steps1cpu=$OUT/eval:cpu-b256-steps1" \
  --arm "b256gpu=$GPU19:fomaml128" --arm "sasrec=$GPU19:sasrec" --arm "none128gpu=$GPU19:none128" \
  --arm "b256cpu+cooc=$OUT/eval:cpu-b256+cooc" --arm "steps1cpu+cooc=$OUT/eval:cpu-b256-steps1+cooc" \
  --arm "sasrec+cooc=$GPU19:sasrec+cooc" \
  --arm "b256cpu@0=$OUT/eval0:cpu-b256" --arm "steps1cpu@0=$OUT/eval0:cpu-b256-steps1" \
  --arm "b256gpu@0=$GPU20:fomaml128" \
  --pair b256cpu=sasrec --pair steps1cpu=sasrec --pair steps1cpu=b256cpu --pair b256cpu=b256gpu \
  --pair b256cpu=none128gpu --pair b256cpu+cooc=sasrec+cooc --pair steps1cpu+cooc=sasrec+cooc \
  --pair b256cpu@0=sasrec --pair steps1cpu@0=sasrec --pair steps1cpu@0=b256cpu@0 --pair b256cpu@0=b256gpu@0 \
  --pair b256cpu=b256cpu@0
# Five inner steps (ARMS=steps5 of train.sh, then eval.sh fomaml128-d05-b256-steps5), when evaluated: its own
# JSON, cpu24/test-pairs-steps5-s0.json.
if [ -f "$OUT/eval/per_user/cpu-b256-steps5-s0.pkl" ]; then
  "${PYTHON:-$ROOT/.venv/bin/python}" docs/results/amazon-sports-screens/pair_repros.py \
    --json docs/results/amazon-sports-screens/cpu24/test-pairs-steps5-s0.json --seeds 0 \
    --arm "steps5cpu=$OUT/eval:cpu-b256-steps5" --arm "b256cpu=$OUT/eval:cpu-b256" --arm "sasrec=$GPU19:sasrec" \
    --arm "steps5cpu@0=$OUT/eval0:cpu-b256-steps5" --arm "b256cpu@0=$OUT/eval0:cpu-b256" \
    --arm "steps5cpu+cooc=$OUT/eval:cpu-b256-steps5+cooc" --arm "sasrec+cooc=$GPU19:sasrec+cooc" \
    --pair steps5cpu=b256cpu --pair steps5cpu=sasrec --pair steps5cpu@0=b256cpu@0 --pair steps5cpu@0=sasrec \
    --pair steps5cpu+cooc=sasrec+cooc
fi
