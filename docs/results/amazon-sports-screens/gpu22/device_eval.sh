#!/usr/bin/env bash
# Issue 15, prepared in the twenty-second session: the second device call of a GPU session, evaluating on the
# GPU itself (`evaluate_exports.py --device cuda`, as `python -m metarec_dist.eval.reproduce` evaluates: the
# adaptation, fine-tuning and fusion weight chosen on the 1,000 tuning validation users, then every test user
# at K = 1, 3, 5, 10) instead of ~40 minutes on the 2-core machine with weights rounded to fp16.
#  1. parity: the nineteenth session's fomaml128-d05-b256-s0 export (carried in .gpuparity/, full list below),
#     evaluated on the GPU and compared with its CPU per-user results (carried: .gpuparity/fomaml128-s0.pkl);
#  2. the exports the first call (`PLAN=session21 KEEP=/tmp/gpu22 ... gpu19/sweep.sh`) left in $KEEP/exports,
#     if the machine is still the same one (the device keeps /tmp only while it stays warm).
# Carry [".whl", ".gpudata", ".gpuparity"]; .gpuparity holds fomaml128-d05-b256-s0/ (gpu19's export) and
# fomaml128-s0.pkl (runs/gpu19/eval/per_user/). Per-user results come back in $OUT/per_user.tgz.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu22_out}" KEEP="${KEEP:-/tmp/gpu22}" DEVICE="${DEVICE:-cuda}" LIMIT="${LIMIT:-480}"
G=docs/results/amazon-sports-screens/gpu19
mkdir -p "$OUT/logs" "$OUT/eval"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$ROOT"
else
  export PYTHONPATH="$ROOT"
fi
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4 METAREC_DATA_DIR="$ROOT/.gpudata"
START=$SECONDS
left() { echo $((LIMIT - (SECONDS - START))); }
# 1. parity with the CPU on one export (the evaluation writes <out>/per_user/<label>-s0.pkl)
if [ -d .gpuparity/fomaml128-d05-b256-s0 ]; then
  timeout -s INT "$(left)" python3 $G/evaluate_exports.py --out "$OUT/parity" --device "$DEVICE" --seeds 0 \
    --model fomaml128=.gpuparity/fomaml128-d05-b256 --fuse fomaml128 > "$OUT/logs/parity.log" 2>&1
  echo "parity exit $? after $((SECONDS - START)) s"
  python3 docs/results/amazon-sports-screens/gpu22/compare_per_user.py .gpuparity/fomaml128-s0.pkl \
    "$OUT/parity/per_user/fomaml128-s0.pkl" 2>&1 | tee "$OUT/logs/parity-compare.txt"
fi
# 2. the first call's exports, most wanted first: seed by seed, the candidate then its control
if [ -d "$KEEP/exports" ]; then
  for s in 0 1 2; do
    for arm in "fomaml512=$KEEP/exports/fomaml128-d05-b512 --fuse fomaml512" \
      "none512=$KEEP/exports/none128-d05-b512 --finetune none512"; do
      [ "$(left)" -gt 30 ] || break 2
      read -ra ARGS <<< "--model $arm"
      timeout -s INT "$(left)" python3 $G/evaluate_exports.py --out "$OUT/eval" --device "$DEVICE" --seeds "$s" \
        "${ARGS[@]}" >> "$OUT/logs/eval.log" 2>&1
      echo "${arm%%=*} s$s exit $? after $((SECONDS - START)) s"
    done
  done
else
  echo "no $KEEP/exports on this machine (a fresh one): evaluate the fp16 exports on the CPU instead"
fi
tar czf "$OUT/per_user.tgz" -C "$OUT" eval parity 2>/dev/null
tar czf "$OUT/logs.tgz" -C "$OUT" logs
rm -rf "$OUT/eval" "$OUT/parity" "$OUT/logs"
