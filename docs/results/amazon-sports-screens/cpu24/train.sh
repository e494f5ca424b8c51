#!/usr/bin/env bash
# Issue 15, twenty-fourth session (no GPU lent): is FOMAML's better initialisation kept with a cheaper inner
# loop? The GPU recipe (configs/coldstart-gpu.yaml: 128 wide, dropout 0.5, 256 tasks per step, 3 inner steps)
# and the same with ONE inner step (the twenty-first session's "steps1" idea: the test-time steps add nothing,
# so the steps serve training only), trained side by side on the 2-core CPU machine with the GPU screen's
# settings (gpu19/sweep.sh), one torch thread each, so that both see the same load. Validation users only
# (early stopping on the loop's criterion); nothing here looks at test users. Checkpoints every 500 steps:
# the same command again resumes.
#   SEED=0 OUT=runs/cpu24 bash docs/results/amazon-sports-screens/cpu24/train.sh
# ARMS picks the arms (default "b256 steps1", run side by side); "steps5": the recipe with FIVE inner steps
# (started after one step lost to three: ARMS=steps5 THREADS=2); "b512": 512 tasks per step, the twenty-third
# session's run (cpu23/train.sh runs it so). Twenty-fifth session (OUT=runs/cpu25): "wd01", the recipe with
# AdamW weight decay 0.1 (it had none), and "drop06", dropout 0.6 instead of 0.5: the recipe over-fits its
# training users (train / valid 2.36 at K = 3, analysis21) and dropout was its largest lever. Twenty-ninth
# session (OUT=/work/runs/cpu29): "wd01s", wd01 validated (and so early-stopped) at the searched adaptation
# (train.eval_adaptation: searched), the one change; "wd01sp4": the same with a patience of 4 validations.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
S="${SEED:-0}"
OUT="$(realpath -m "${OUT:-runs/cpu24}")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
THREADS="${THREADS:-1}"
mkdir -p "$OUT/logs"
export METAREC_DATA_DIR="${METAREC_DATA_DIR:-$ROOT/../shared/data}" WANDB_MODE=disabled PYTHONUNBUFFERED=1
one() {  # one NAME [--set ...]: the recipe's settings, then the arm's own
  local name="$1-s$S"; shift
  "$PY" -m metarec_dist.cli train --config configs/coldstart-sasrec.yaml --set data.valid_frac=0.1 \
    --set data.test_frac=0.1 --set data.cache=false --set runtime.use_gpu=false \
    --set runtime.torch_threads="$THREADS" --set "runtime.storage_path=$OUT/runs" \
    --set data.format=recbole --set data.name=amazon-sports --set data.split=random \
    --set meta.algorithm=fomaml --set meta.dense_weight=1.0 --set meta.inner_lr=0.5 \
    --set model.hidden_size=128 --set model.num_heads=4 --set model.dropout=0.5 \
    --set meta.meta_batch_size=256 --set train.seed="$S" --set runtime.run_name="$name" "$@" \
    --json "$OUT/logs/$name.json" >> "$OUT/logs/$name.log" 2>&1
  echo "exit $?" >> "$OUT/logs/$name.log"
}
for arm in ${ARMS:-b256 steps1}; do
  case "$arm" in
    b256) one fomaml128-d05-b256 & ;;
    steps1) one fomaml128-d05-b256-steps1 --set meta.adaptation_steps=1 & ;;
    steps5) one fomaml128-d05-b256-steps5 --set meta.adaptation_steps=5 & ;;
    b512) one fomaml128-d05-b512 --set meta.meta_batch_size=512 & ;;
    wd01) one fomaml128-d05-b256-wd01 --set optim.weight_decay=0.1 & ;;
    drop06) one fomaml128-d05-b256-drop06 --set model.dropout=0.6 & ;;
    wd01s) one fomaml128-d05-b256-wd01s --set optim.weight_decay=0.1 --set train.eval_adaptation=searched & ;;
    wd01sp4) one fomaml128-d05-b256-wd01sp4 --set optim.weight_decay=0.1 --set train.eval_adaptation=searched \
      --set train.early_stop_patience=4 & ;;
    *) echo "unknown arm $arm (b256, steps1, steps5, b512, wd01, drop06, wd01s, wd01sp4)" >&2; exit 2 ;;
  esac
done
wait
