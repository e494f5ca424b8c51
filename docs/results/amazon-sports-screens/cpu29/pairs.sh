#!/usr/bin/env bash
# Issue 15, twenty-ninth session: `wd01s`, the weight-decay recipe validated (and so early-stopped) at the
# searched adaptation (train.eval_adaptation: searched; cpu24/train.sh ARMS=wd01s, evaluated by cpu24/eval.sh
# fomaml128-d05-b256-wd01s), paired on the test users with the twenty-sixth session's `wd01` (the same
# training validated at the trained adaptation: the one difference) and `sasrec64`, kept in cpu26/per_user.
# From the per-user results kept in cpu29/per_user (per_user_store.py), or KEPT=<OUT>/eval for fresh ones:
#   SEEDS=0 bash docs/results/amazon-sports-screens/cpu29/pairs.sh   # -> cpu29/test-pairs-s0.json
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
R=docs/results/amazon-sports-screens
HERE=$R/cpu29
KEPT="${KEPT:-$HERE}" SEEDS="${SEEDS:-0}"
"${PYTHON:-$ROOT/.venv/bin/python}" $R/pair_repros.py --json "$HERE/test-pairs-s${SEEDS//,/-}.json" \
  --seeds "$SEEDS" \
  --arm "wd01s=$KEPT:cpu-b256-wd01s" --arm "wd01=$R/cpu26:cpu-b256-wd01" --arm "sasrec=$R/cpu26:cpu-sasrec64" \
  --arm "wd01s+cooc=$KEPT:cpu-b256-wd01s+cooc" --arm "wd01+cooc=$R/cpu26:cpu-b256-wd01+cooc" \
  --arm "sasrec+cooc=$R/cpu26:cpu-sasrec64+cooc" \
  --pair wd01s=sasrec --pair wd01s=wd01 --pair wd01=sasrec --pair wd01s+cooc=sasrec+cooc --pair wd01s+cooc=wd01+cooc
