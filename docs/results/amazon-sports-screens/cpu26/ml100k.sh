#!/usr/bin/env bash
# Issue 15, twenty-sixth session: the weight-decay arm on MovieLens 100K ("never below `sasrec`" must hold on
# both datasets), trained and evaluated on the 2-core machine by the reproduction (launch/reproduce.sh's
# ML-100K `data:` lines; adaptation and fusion weight chosen on the 94 validation users). `wd01` is
# configs/coldstart-gpu.yaml with AdamW weight decay 0.1 (written into OUT, not a second copy in the
# repository); `recipe` is configs/coldstart-gpu.yaml as it is; `sasrec` configs/coldstart-sasrec.yaml.
#   SEEDS=0,1,2 OUT=runs/ml26 bash docs/results/amazon-sports-screens/cpu26/ml100k.sh
# METHODS picks the methods (default "wd01 sasrec"), JOBS the runs at once (default 2); --reuse: a second call skips the runs already evaluated.
# The per-user results are then kept with per_user_store.py (cpu26/ml100k/per_user/).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
OUT="$(realpath -m "${OUT:-runs/ml26}")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$OUT"
export METAREC_DATA_DIR="${METAREC_DATA_DIR:-$ROOT/../shared/data}" WANDB_MODE=disabled
sed 's/^  schedule: cosine$/  schedule: cosine\n  weight_decay: 0.1/' configs/coldstart-gpu.yaml > "$OUT/coldstart-gpu-wd01.yaml"
grep -q '^  weight_decay: 0.1$' "$OUT/coldstart-gpu-wd01.yaml"  # the line it edits is still there
args=()
for m in ${METHODS:-wd01 sasrec}; do
  case "$m" in
    wd01) args+=(--method "wd01=$OUT/coldstart-gpu-wd01.yaml" --fuse wd01) ;;
    recipe) args+=(--method recipe=configs/coldstart-gpu.yaml --fuse recipe) ;;
    sasrec) args+=(--method sasrec=configs/coldstart-sasrec.yaml --fuse sasrec) ;;
    *) echo "unknown method $m (wd01, recipe, sasrec)" >&2; exit 2 ;;
  esac
done
"$PY" -m metarec_dist.eval.reproduce "${args[@]}" --baseline sasrec --seeds "${SEEDS:-0,1,2}" --jobs "${JOBS:-2}" \
  --set data.format=auto --set data.name=movielens-100k --set data.split=time --reuse --out "$OUT" \
  --markdown "" --plot ""
