#!/usr/bin/env bash
# Issue 15, twenty-sixth session: more seeds of the recipe with AdamW weight decay 0.1 (`wd01`) and of
# `sasrec64`, all trained on the 2-core machine (the per-user results of the GPU-trained `sasrec64` and of
# the twenty-fifth session's seed 0 went with that session's machine). Trained by cpu24/train.sh ARMS=wd01 and
# cpu25/train_sasrec.sh ARMS=sasrec64, evaluated by cpu24/eval.sh, their per-user results kept in
# cpu26/per_user/ (per_user_store.py), so this pairs them from the repository alone:
#   SEEDS=1,2 bash docs/results/amazon-sports-screens/cpu26/pairs.sh   # -> cpu26/test-pairs-s1-2.json
# SEEDS takes any seeds whose .npz (or, with KEPT=<runs>/eval, .pkl) are there; `wd01@0` is `wd01` with no
# test-time step (KEPT0, default cpu26/eval0: cpu24/eval.sh's second evaluation).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
HERE=docs/results/amazon-sports-screens/cpu26
KEPT="${KEPT:-$HERE}" KEPT0="${KEPT0:-$HERE/eval0}" SEEDS="${SEEDS:-1,2}"
"${PYTHON:-$ROOT/.venv/bin/python}" docs/results/amazon-sports-screens/pair_repros.py \
  --json "$HERE/test-pairs-s${SEEDS//,/-}.json" --seeds "$SEEDS" \
  --arm "wd01=$KEPT:cpu-b256-wd01" --arm "wd01@0=$KEPT0:cpu-b256-wd01" --arm "sasrec=$KEPT:cpu-sasrec64" \
  --arm "wd01+cooc=$KEPT:cpu-b256-wd01+cooc" --arm "sasrec+cooc=$KEPT:cpu-sasrec64+cooc" \
  --pair wd01=sasrec --pair wd01@0=sasrec --pair wd01=wd01@0 --pair wd01+cooc=sasrec+cooc
