#!/usr/bin/env bash
# Reproduce docs/results/ml100k-features.md (issue 13): MovieLens 100K with side information, 3 seeds.
#   1. cold-start users, K = 1, 3, 5, 10: fomaml and sasrec without and with features (METHOD+features),
#      each +features row paired with its own method;
#   2. new items (the newest 10% of items held out of training): the content-aware model (fomaml+features)
#      against the id-only one (fomaml), the content kNN and random, paired with the content kNN;
#   3. mixed: the same runs ranking all items, new and old (evaluation only: --reuse-runs);
#   and the cold-start comparison of the variant chosen on validation users (section cold-start-gated);
#   the later screens: new items with item_id_dropout 0.7, cold-start users without item content.
#   bash launch/results_ml100k_features.sh [--seeds 0,1,2] [--jobs 2]
# Data: $METAREC_DATA_DIR, else ../shared/data next to the repo if present, else ~/.cache/metarec.
# Runs go to runs/ml100k-features{,-items}/; the page's generated sections are rewritten, its prose kept.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"  # setup_venv.sh's default; a VENV of the user's own wins
if [ ! -x "$VENV/bin/python" ]; then
  source launch/setup_venv.sh
fi
if [ -z "${METAREC_DATA_DIR:-}" ] && [ -d "$ROOT/../shared/data" ]; then
  export METAREC_DATA_DIR="$(cd "$ROOT/../shared/data" && pwd)"
fi
export WANDB_MODE="${WANDB_MODE:-offline}" PYTHONUNBUFFERED=1
# Two single-threaded training processes use two cores better than one process with two threads.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PAGE=docs/results/ml100k-features.md
repro() { "$VENV/bin/python" -m metarec_dist.eval.reproduce --seeds 0,1,2 --jobs 2 --markdown "$PAGE" "$@"; }

repro --protocol cold_start --section cold-start --out runs/ml100k-features \
  --method fomaml=configs/ml100k.yaml \
  --method fomaml+features=configs/ml100k-features.yaml \
  --method sasrec=configs/ml100k-sasrec.yaml \
  --method sasrec+features=configs/ml100k-features-sasrec.yaml \
  --pair fomaml+features=fomaml --pair sasrec+features=sasrec \
  --json docs/results/ml100k-features.json --plot docs/results/ml100k-features_ndcg_vs_k.png "$@"

# The variant chosen on validation users among those screened (docs/results/ml100k-features.md, "Variants
# tried"): the gated item representation, against the same fomaml runs' seeds.
repro --protocol cold_start --section cold-start-gated --out runs/ml100k-features-gated \
  --method fomaml=configs/ml100k.yaml --method fomaml+features=configs/ml100k-features.yaml \
  --set model.item_content=gated --pair fomaml+features=fomaml --baseline popularity \
  --json docs/results/ml100k-features-gated.json --plot '' "$@"

ITEMS=(--out runs/ml100k-features-items --baseline content-knn --plot ''
  --method fomaml+features=configs/ml100k-features.yaml --method fomaml=configs/ml100k.yaml)
repro --protocol new-items --section new-items --json docs/results/ml100k-features-new-items.json \
  "${ITEMS[@]}" "$@"
repro --protocol mixed --section mixed --reuse-runs --json docs/results/ml100k-features-mixed.json \
  "${ITEMS[@]}" "$@"

# New items with model.item_id_dropout 0.3 (chosen on validation users: docs/results/ml100k-features.md,
# "Variants tried"): the content-aware model trained with 30% of the items represented by content alone.
IDDROP=(--out runs/ml100k-features-iddrop --baseline content-knn --plot '' --set model.item_id_dropout=0.3
  --method fomaml+features=configs/ml100k-features.yaml)
repro --protocol new-items --section new-items-iddrop --json docs/results/ml100k-features-new-items-iddrop.json \
  "${IDDROP[@]}" "$@"
repro --protocol mixed --section mixed-iddrop --reuse-runs --json docs/results/ml100k-features-mixed-iddrop.json \
  "${IDDROP[@]}" "$@"

# New items with model.item_id_dropout 0.7 (the second screen, chosen on validation users among 0.5, 0.7, 0.9
# and gated + 0.3: docs/results/ml100k-features.md, "New items with model.item_id_dropout: 0.7").
IDDROP07=(--out runs/ml100k-features-iddrop07 --baseline content-knn --plot '' --set model.item_id_dropout=0.7
  --method fomaml+features=configs/ml100k-features.yaml)
repro --protocol new-items --section new-items-iddrop07 \
  --json docs/results/ml100k-features-new-items-iddrop07.json "${IDDROP07[@]}" "$@"
repro --protocol mixed --section mixed-iddrop07 --reuse-runs \
  --json docs/results/ml100k-features-mixed-iddrop07.json "${IDDROP07[@]}" "$@"

# Cold-start users with the user token and no item content (model.item_content off: the K = 1 screen of
# docs/results/ml100k-features.md, "Cold-start users at K = 1"), against the same fomaml seeds.
repro --protocol cold_start --section cold-start-contentoff --out runs/ml100k-features-contentoff \
  --method fomaml=configs/ml100k.yaml --method fomaml+features=configs/ml100k-features.yaml \
  --set model.item_content=off --pair fomaml+features=fomaml --baseline popularity \
  --json docs/results/ml100k-features-contentoff.json --plot '' "$@"
