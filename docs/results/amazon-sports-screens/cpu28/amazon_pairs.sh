#!/usr/bin/env bash
# Issue 15, twenty-eighth session: the per-K weight choice on Amazon Sports' 3,560 test users (cpu28/per_k.py
# on the run of cpu28/curve_amazon.sh), paired with each other and with the CPU-trained `sasrec64` and `wd01`
# of the same seed (cpu26/per_user). From the per-user results kept in cpu28/amazon/per_user, or
# KEPT=<out>/eval for fresh ones:
#   SEEDS=0 bash docs/results/amazon-sports-screens/cpu28/amazon_pairs.sh   # -> cpu28/amazon/test-pairs-s0.json
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
HERE=docs/results/amazon-sports-screens/cpu28/amazon
OLD=docs/results/amazon-sports-screens/cpu26
KEPT="${KEPT:-$HERE}" SEEDS="${SEEDS:-0}"
args=(--arm "sasrec=$OLD:cpu-sasrec64" --arm "wd01=$OLD:cpu-b256-wd01")
for m in meanbest tunedmean perk perklog; do
  args+=(--arm "$m=$KEPT:$m" --pair "$m=sasrec")
  [ "$m" = meanbest ] || args+=(--pair "$m=meanbest")
done
mkdir -p "$HERE"
"${PYTHON:-$ROOT/.venv/bin/python}" docs/results/amazon-sports-screens/pair_repros.py \
  --json "${JSON:-$HERE/test-pairs-s${SEEDS//,/-}.json}" --seeds "$SEEDS" "${args[@]}" --pair perk=wd01
