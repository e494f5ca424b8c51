#!/usr/bin/env bash
# Issue 15, twenty-seventh session: MovieLens 100K's paired test-user tables for the runs of cpu26/ml100k.sh,
# from their per-user results kept in cpu26/ml100k/per_user/ (per_user_store.py), so from the repository alone:
#   SEEDS=0,1,2 bash docs/results/amazon-sports-screens/cpu26/ml100k_pairs.sh   # -> cpu26/ml100k/test-pairs-s0-1-2.json
# ARMS picks the methods (default "wd01 sasrec"; add "recipe" where its seeds are kept); KEPT=<OUT of
# ml100k.sh> reads the reproduction's own pickles instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
HERE=docs/results/amazon-sports-screens/cpu26/ml100k
KEPT="${KEPT:-$HERE}" SEEDS="${SEEDS:-0,1,2}"
args=()
for m in ${ARMS:-wd01 sasrec}; do
  args+=(--arm "$m=$KEPT:$m" --arm "$m+cooc=$KEPT:$m+cooc")
  [ "$m" = sasrec ] || args+=(--pair "$m=sasrec" --pair "$m+cooc=sasrec+cooc" --pair "$m+cooc=sasrec")
done
[[ " ${ARMS:-wd01 sasrec} " == *" recipe "* && " ${ARMS:-wd01 sasrec} " == *" wd01 "* ]] && args+=(--pair wd01=recipe)
"${PYTHON:-$ROOT/.venv/bin/python}" docs/results/amazon-sports-screens/pair_repros.py \
  --json "$HERE/test-pairs-s${SEEDS//,/-}.json" --seeds "$SEEDS" "${args[@]}"
