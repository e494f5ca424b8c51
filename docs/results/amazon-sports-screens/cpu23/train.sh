#!/usr/bin/env bash
# Issue 15, twenty-third session (no GPU lent): the twentieth session's best screened candidate,
# `fomaml128-d05-b512` (configs/coldstart-gpu.yaml with 512 tasks per step; gpu19/sweep.sh PLAN=scale20),
# trained on the 2-core CPU machine instead: sweep.sh's exact settings, with runtime.use_gpu=false and two
# torch threads. Validation users only (early stopping on the training loop's criterion); nothing here looks
# at test users. Checkpoints every 500 steps: the same command again resumes an interrupted run.
#   SEED=0 OUT=runs/cpu23 bash docs/results/amazon-sports-screens/cpu23/train.sh
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
S="${SEED:-0}"
OUT="$(realpath -m "${OUT:-runs/cpu23}")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
NAME="fomaml128-d05-b512-s$S"
mkdir -p "$OUT/logs"
export METAREC_DATA_DIR="${METAREC_DATA_DIR:-$ROOT/../shared/data}" WANDB_MODE=disabled PYTHONUNBUFFERED=1
"$PY" -m metarec_dist.cli train --config configs/coldstart-sasrec.yaml --set data.valid_frac=0.1 \
  --set data.test_frac=0.1 --set data.cache=false --set runtime.use_gpu=false --set runtime.torch_threads=2 \
  --set "runtime.storage_path=$OUT/runs" \
  --set data.format=recbole --set data.name=amazon-sports --set data.split=random \
  --set meta.algorithm=fomaml --set meta.dense_weight=1.0 --set meta.inner_lr=0.5 \
  --set model.hidden_size=128 --set model.num_heads=4 --set model.dropout=0.5 --set meta.meta_batch_size=512 \
  --set train.seed="$S" --set runtime.run_name="$NAME" --json "$OUT/logs/$NAME.json" >> "$OUT/logs/$NAME.log" 2>&1
echo "exit $?" >> "$OUT/logs/$NAME.log"
