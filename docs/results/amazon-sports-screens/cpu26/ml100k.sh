#!/usr/bin/env bash
# Issue 15, twenty-sixth session: the weight-decay arm on MovieLens 100K ("never below `sasrec`" must hold on
# both datasets), trained and evaluated on the 2-core machine by the reproduction (launch/reproduce.sh's
# ML-100K `data:` lines; adaptation and fusion weight chosen on the 94 validation users). `wd01` is
# configs/coldstart-gpu.yaml with AdamW weight decay 0.1 (written into OUT, not a second copy in the
# repository); `recipe` is configs/coldstart-gpu.yaml as it is; `sasrec` configs/coldstart-sasrec.yaml.
#   SEEDS=0,1,2 OUT=runs/ml26 bash docs/results/amazon-sports-screens/cpu26/ml100k.sh
# METHODS picks the methods (default "wd01 sasrec"), JOBS the runs at once (default 2); --reuse: a second call skips the runs already evaluated.
# The per-user results are then kept with per_user_store.py (cpu26/ml100k/per_user/).
# Twenty-seventh session: `b64`, the recipe sized for MovieLens 100K's ~750 training users: 64 tasks per step
# (not 256) and a validation (and log, checkpoint) every 100 steps (not 500), written into OUT as `wd01` is.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
OUT="$(realpath -m "${OUT:-runs/ml26}")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$OUT"
export METAREC_DATA_DIR="${METAREC_DATA_DIR:-$ROOT/../shared/data}" WANDB_MODE=disabled
sed 's/^  schedule: cosine$/  schedule: cosine\n  weight_decay: 0.1/' configs/coldstart-gpu.yaml > "$OUT/coldstart-gpu-wd01.yaml"
grep -q '^  weight_decay: 0.1$' "$OUT/coldstart-gpu-wd01.yaml"  # the line it edits is still there
sed -e 's/^  meta_batch_size: 256 .*$/  meta_batch_size: 64/' -e 's/^  eval_every: 500 .*$/  eval_every: 100/' \
  -e 's/^  log_every: 250$/  log_every: 100/' -e 's/^  every: 500 .*$/  every: 100/' configs/coldstart-gpu.yaml \
  > "$OUT/coldstart-gpu-b64.yaml"
[ "$(grep -c '^  meta_batch_size: 64$\|^  \(eval\|log\)\?_\?every: 100$' "$OUT/coldstart-gpu-b64.yaml")" = 4 ]
args=()
for m in ${METHODS:-wd01 sasrec}; do
  case "$m" in
    wd01) args+=(--method "wd01=$OUT/coldstart-gpu-wd01.yaml" --fuse wd01) ;;
    recipe) args+=(--method recipe=configs/coldstart-gpu.yaml --fuse recipe) ;;
    b64) args+=(--method "b64=$OUT/coldstart-gpu-b64.yaml" --fuse b64) ;;
    sasrec) args+=(--method sasrec=configs/coldstart-sasrec.yaml --fuse sasrec) ;;
    *) echo "unknown method $m (wd01, recipe, b64, sasrec)" >&2; exit 2 ;;
  esac
done
"$PY" -m metarec_dist.eval.reproduce "${args[@]}" --baseline sasrec --seeds "${SEEDS:-0,1,2}" --jobs "${JOBS:-2}" \
  --set data.format=auto --set data.name=movielens-100k --set data.split=time --reuse --out "$OUT" \
  --markdown "" --plot ""
