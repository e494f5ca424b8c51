#!/usr/bin/env bash
# Issue 15, twenty-eighth session: the per-K weight choice on MovieLens 100K's test users (cpu28/per_k.py on
# the runs of cpu28/ml_curve.sh), paired with each other and with the CPU `sasrec` and recipe seeds of the
# twenty-sixth session (cpu26/ml100k/per_user: the same 94 test users). From the per-user results kept in
# cpu28/ml100k/per_user (per_user_store.py), or KEPT=<out>/eval for fresh ones:
#   SEEDS=0,1,2 bash docs/results/amazon-sports-screens/cpu28/ml_pairs.sh   # -> cpu28/ml100k/test-pairs-s0-1-2.json
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
HERE=docs/results/amazon-sports-screens/cpu28/ml100k
OLD=docs/results/amazon-sports-screens/cpu26/ml100k
KEPT="${KEPT:-$HERE}" SEEDS="${SEEDS:-0,1,2}"
args=(--arm "sasrec=$OLD:sasrec" --arm "recipe=$OLD:recipe")
for m in meanbest tunedmean perk perklog; do
  args+=(--arm "$m=$KEPT:$m" --pair "$m=sasrec")
  [ "$m" = meanbest ] || args+=(--pair "$m=meanbest")
done
mkdir -p "$HERE"
"${PYTHON:-$ROOT/.venv/bin/python}" docs/results/amazon-sports-screens/pair_repros.py \
  --json "${JSON:-$HERE/test-pairs-s${SEEDS//,/-}.json}" --seeds "$SEEDS" "${args[@]}" --pair meanbest=recipe
