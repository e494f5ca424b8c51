#!/usr/bin/env bash
# Issue 15, twenty-eighth session: the weight choices of cpu28/per_k.py on the test users, paired with each
# other and with the CPU-trained reference seeds of the twenty-sixth session (the same test users):
#   DATA=ml100k (default): the recipe runs of cpu28/ml_curve.sh against cpu26/ml100k's `sasrec` and `recipe`;
#     ARM=wd01: its weight-decay runs (ml_curve.sh ARM=wd01) against `sasrec` and `wd01`;
#   DATA=amazon: the run of cpu28/curve_amazon.sh against cpu26's `sasrec64` and `wd01`.
# From the per-user results kept in cpu28/<ml100k, ml100k-wd01, amazon>/per_user (per_user_store.py), or
# KEPT=<out>/eval for fresh ones:
#   SEEDS=0,1,2 bash docs/results/amazon-sports-screens/cpu28/pairs.sh   # -> cpu28/ml100k/test-pairs-s0-1-2.json
#   DATA=amazon SEEDS=0 bash docs/results/amazon-sports-screens/cpu28/pairs.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
R=docs/results/amazon-sports-screens
case "${DATA:-ml100k}/${ARM:-recipe}" in
  ml100k/recipe) HERE=$R/cpu28/ml100k REF=recipe refs=(--arm "sasrec=$R/cpu26/ml100k:sasrec" --arm "recipe=$R/cpu26/ml100k:recipe") ;;
  ml100k/wd01) HERE=$R/cpu28/ml100k-wd01 REF=wd01 refs=(--arm "sasrec=$R/cpu26/ml100k:sasrec" --arm "wd01=$R/cpu26/ml100k:wd01") ;;
  amazon/recipe) HERE=$R/cpu28/amazon REF=wd01 refs=(--arm "sasrec=$R/cpu26:cpu-sasrec64" --arm "wd01=$R/cpu26:cpu-b256-wd01") ;;
  *) echo "unknown DATA/ARM ${DATA:-ml100k}/${ARM:-recipe} (ml100k/recipe, ml100k/wd01, amazon/recipe)" >&2; exit 2 ;;
esac
KEPT="${KEPT:-$HERE}" SEEDS="${SEEDS:-0,1,2}"
args=("${refs[@]}")
for m in meanbest tunedmean perk perklog; do
  args+=(--arm "$m=$KEPT:$m" --pair "$m=sasrec")
  [ "$m" = meanbest ] || args+=(--pair "$m=meanbest")
done
mkdir -p "$HERE"
"${PYTHON:-$ROOT/.venv/bin/python}" $R/pair_repros.py --json "${JSON:-$HERE/test-pairs-s${SEEDS//,/-}.json}" \
  --seeds "$SEEDS" "${args[@]}" --pair "meanbest=$REF" --pair "perk=$REF"
