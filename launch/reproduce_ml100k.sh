#!/usr/bin/env bash
# Reproduce the MovieLens 100K section of docs/results.md (popularity, sasrec, none, none+finetune, fomaml,
# reptile with the configs/ml100k*.yaml recipes; 5 seeds each), about 15 minutes on 2 CPU cores: a thin
# wrapper of launch/reproduce.sh with that section's methods and output paths.
#   bash launch/reproduce_ml100k.sh [--seeds 0,1,2,3,4] [--jobs 2] [--out runs/ml100k-repro]
# The issue-15 comparison on this dataset (configs/coldstart*.yaml) is `bash launch/reproduce.sh ml100k`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$ROOT/launch/reproduce.sh" ml100k \
  --method fomaml=configs/ml100k.yaml \
  --method reptile=configs/ml100k-reptile.yaml \
  --method none=configs/ml100k-none.yaml \
  --method sasrec=configs/ml100k-sasrec.yaml \
  --finetune none \
  --baseline none \
  --seeds 0,1,2,3,4 \
  --out runs/ml100k-repro \
  --json docs/results.json \
  --plot docs/results_ndcg_vs_k.png \
  --markdown docs/results.md \
  "$@"
