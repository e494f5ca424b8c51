#!/usr/bin/env bash
# Reproduce a cold-start comparison on one dataset: docs/results/<dataset>.{md,json,png}.
#   bash launch/reproduce.sh ml100k|amazon-sports [--seeds 0,1,2] [--jobs 3] [--method NAME=CONFIG ...]
# Default methods: the recommended recipe (configs/coldstart.yaml, two stages: train.pretrain) and its
# baseline `sasrec` (configs/coldstart-sasrec.yaml, which is the recipe's first stage: evaluated from it, not
# trained twice), 3 seeds each, 3 single-threaded processes, each also fused with the co-occurrence counts
# (METHOD+cooc); popularity and co-occurrence are always added.
# The configs are used unchanged on both datasets; only their `data:` lines are set here, per dataset.
# Any other option goes to `python -m metarec_dist.eval.reproduce` (given --method, it replaces the default
# methods). Data: $METAREC_DATA_DIR, else ../shared/data next to the repo if present, else ~/.cache/metarec.
# Output: runs/<dataset>-repro and the published page docs/results/<dataset>.{md,json,png}; given --out DIR,
# everything goes into DIR (DIR/results.{md,json}, DIR/ndcg_vs_k.png) and docs/ is left alone (name
# --markdown/--json/--plot to write elsewhere). A quick look at the flow on ml100k (under a minute):
#   bash launch/reproduce.sh ml100k --method fomaml=configs/ml100k.yaml --seeds 0 --jobs 1 \
#     --set train.meta_steps=50 --out runs/try-repro
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATASET="${1:-}"
case "$DATASET" in
  -h|--help)
    # This header, then the options passed through (the Python module's own help).
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    echo
    PY="${VENV:-.venv}/bin/python"
    [ -x "$PY" ] || PY=python3
    exec "$PY" -m metarec_dist.eval.reproduce --help ;;
  ml100k)
    DATA=(--set data.format=auto --set data.name=movielens-100k --set data.split=time) ;;
  amazon-sports)
    # RecBole atomic file <data dir>/amazon-sports/amazon-sports.inter; users split at random 80/10/10
    DATA=(--set data.format=recbole --set data.name=amazon-sports --set data.split=random) ;;
  *)
    echo "usage: bash launch/reproduce.sh ml100k|amazon-sports [reproduce options]  (--help lists them)" >&2
    exit 2 ;;
esac
shift
DATA+=(--set data.valid_frac=0.1 --set data.test_frac=0.1)
VENV="${VENV:-$ROOT/.venv}"  # setup_venv.sh's default; a VENV of the user's own wins
if [ ! -x "$VENV/bin/python" ]; then
  source launch/setup_venv.sh
fi
if [ -z "${METAREC_DATA_DIR:-}" ] && [ -d "$ROOT/../shared/data" ]; then
  export METAREC_DATA_DIR="$(cd "$ROOT/../shared/data" && pwd)"
fi
export WANDB_MODE="${WANDB_MODE:-offline}" PYTHONUNBUFFERED=1
# Single-threaded training processes use the cores better than one process with more threads; one per seed
# (3) even on 2 cores, so that no seed trains alone at the end while a core idles (Amazon Sports: 35 minutes
# with 3 processes on 2 cores, docs/results/amazon-sports.md).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# Each also fused with the item co-occurrence counts (coldstart+cooc, sasrec+cooc; the weight chosen on
# validation users): the count baseline `cooccurrence` beats `sasrec` at small K on Amazon Sports.
METHODS=(--method coldstart=configs/coldstart.yaml --method sasrec=configs/coldstart-sasrec.yaml
  --fuse coldstart --fuse sasrec)
# The published page unless the user names another output folder: a trial with --out must not overwrite
# the published numbers.
OUT=(--out "runs/$DATASET-repro" --json "docs/results/$DATASET.json" --plot "docs/results/$DATASET.png"
  --markdown "docs/results/$DATASET.md")
BASELINE=(--baseline sasrec)
OWN_SASREC=0
for arg in "$@"; do
  case "$arg" in
    --method|--method=*) METHODS=() ;;
    --out|--out=*) OUT=() ;;
  esac
  case "$arg" in sasrec=*|--method=sasrec=*) OWN_SASREC=1 ;; esac
done
# Methods of the user's own: `sasrec` stays the baseline only if one of them is named so.
if [ ${#METHODS[@]} -eq 0 ] && [ "$OWN_SASREC" = 0 ]; then BASELINE=(); fi
exec "$VENV/bin/python" -m metarec_dist.eval.reproduce \
  "${METHODS[@]}" \
  "${DATA[@]}" \
  "${BASELINE[@]}" \
  --seeds 0,1,2 \
  --jobs 3 \
  "${OUT[@]}" \
  "$@"
