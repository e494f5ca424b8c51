#!/usr/bin/env bash
# Issue 15, nineteenth session: the page's "next idea" -- a larger, regularised first stage (`sasrec`) and
# meta-learners trained from scratch to convergence, which the 2-core machine cannot afford -- screened on
# one lent H200 in one call. Validation users only (the early-stopping criterion of
# configs/coldstart-sasrec.yaml: mean NDCG@10 over K = 1, 3, 5, 10 on the same 1,000 validation users);
# nothing here looks at test users. Every run is configs/coldstart-sasrec.yaml with Amazon Sports' `data:`
# lines (launch/reproduce.sh's) and the `--set`s below; runs share the GPU as parallel processes.
# Needs .whl/ (launch/gpu_check.sh's header) and .gpudata/amazon-sports/amazon-sports.inter, both
# git-ignored, carried: carry [".whl", ".gpudata"].
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu19_out}"
LIMIT="${LIMIT:-400}"   # seconds per run; a run cut here reports its best validation so far (checkpoint)
mkdir -p "$OUT/logs"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$ROOT"
else
  export PYTHONPATH="$ROOT"
fi
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 METAREC_DATA_DIR="$ROOT/.gpudata"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/logs/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
COMMON=(--config configs/coldstart-sasrec.yaml --set data.valid_frac=0.1 --set data.test_frac=0.1
  --set data.cache=false --set runtime.use_gpu="${GPU:-true}" --set runtime.torch_threads=1
  --set "runtime.storage_path=$OUT/runs")
# launch/reproduce.sh's `data:` lines for each dataset; a run's settings come after them (the first is Amazon)
AMZ=(--set data.format=recbole --set data.name=amazon-sports --set data.split=random)
ML=(--set data.format=auto --set data.name=movielens-100k --set data.split=time)
read -ra EXTRA <<< "${EXTRA:-}"  # a local dry run: GPU=false LIMIT=60 EXTRA="--set train.meta_steps=10 ..."
FOMAML=(--set meta.algorithm=fomaml --set meta.dense_weight=1.0 --set meta.inner_lr=0.5)
W128=(--set model.hidden_size=128 --set model.num_heads=4 --set model.dropout=0.5)
W256=(--set model.hidden_size=256 --set model.num_heads=8 --set model.dropout=0.5)
B256=(--set meta.meta_batch_size=256)
one() {  # name seed [--ml100k] settings...
  local name=$1 seed=$2; shift 2
  case "$1" in --ml100k) shift; set -- "${ML[@]}" "$@" ;; *) set -- "${AMZ[@]}" "$@" ;; esac
  timeout -s INT "$LIMIT" python3 -m metarec_dist.cli train "${COMMON[@]}" "$@" "${EXTRA[@]}" --set train.seed="$seed" \
    --set runtime.run_name="$name-s$seed" --json "$OUT/logs/$name-s$seed.json" > "$OUT/logs/$name-s$seed.log" 2>&1
  echo "$name-s$seed exit $?"
}
# A 10-step smoke of both loops on the GPU first: a failure here costs seconds, not the call.
LIMIT=120 one smoke 0 "${FOMAML[@]}" --set train.meta_steps=10 --set train.eval_every=5 --set train.eval_users=100 --set train.log_every=5 \
  --set checkpoint.every=5
if [ ! -f "$OUT/logs/smoke-s0.json" ]; then tail -40 "$OUT/logs/smoke-s0.log"; exit 1; fi
rm -rf "$OUT/runs/smoke-s0"
nvidia-smi dmon -s u -d 10 > "$OUT/logs/dmon.txt" 2>&1 &
DMON=$!
PIDS=()
if [ "${PLAN:-screen}" = screen ]; then  # the first call: one or two seeds of each candidate
  for s in 0 1; do
    one sasrec64 $s & PIDS+=($!)
    one sasrec64-b256 $s "${B256[@]}" & PIDS+=($!)
    one sasrec128-d05-b256 $s "${W128[@]}" "${B256[@]}" & PIDS+=($!)
    one sasrec256-d05-b256 $s "${W256[@]}" "${B256[@]}" & PIDS+=($!)
  done
  one fomaml64 0 "${FOMAML[@]}" & PIDS+=($!)
  one fomaml128-d05-b256 0 "${FOMAML[@]}" "${W128[@]}" "${B256[@]}" & PIDS+=($!)
elif [ "${PLAN}" = session20 ]; then  # the twentieth session's one call (docs/results/amazon-sports.md "GPU"):
  # (a) MovieLens 100K, the confirmation's three arms over 3 seeds, models back for the 2-core machine;
  # (b) Amazon Sports, validation only: the recipe with one of its three changes undone each, 2 seeds
  CFG=("${FOMAML[@]}" "${W128[@]}" "${B256[@]}")  # = configs/coldstart-gpu.yaml, as in the confirmation
  CTRL=("${CFG[@]}" --set meta.algorithm=none)     # = gpu19/none128.yaml
  for s in 0 1 2; do
    one ml-sasrec64 $s --ml100k & PIDS+=($!)
    one ml-fomaml128 $s --ml100k "${CFG[@]}" & PIDS+=($!)
    one ml-none128 $s --ml100k "${CTRL[@]}" & PIDS+=($!)
  done
  for s in 0 1; do
    one fomaml64-d05-b256 $s "${CFG[@]}" --set model.hidden_size=64 --set model.num_heads=2 & PIDS+=($!)
    one fomaml128-d02-b256 $s "${CFG[@]}" --set model.dropout=0.2 & PIDS+=($!)
    one fomaml128-d05-b64 $s "${CFG[@]}" --set meta.meta_batch_size=64 & PIDS+=($!)
  done
elif [ "${PLAN}" = scale20 ]; then  # the twentieth session's second call, validation only: the recipe made
  # larger (256 wide) or given more tasks per step (512), the direction its ablations point to
  W256D=(--set model.hidden_size=256 --set model.num_heads=8)
  for s in 0 1; do
    one fomaml256-d05-b256 $s "${FOMAML[@]}" "${W128[@]}" "${B256[@]}" "${W256D[@]}" & PIDS+=($!)
    one fomaml128-d05-b512 $s "${FOMAML[@]}" "${W128[@]}" --set meta.meta_batch_size=512 & PIDS+=($!)
  done
  one fomaml256-d05-b512 0 "${FOMAML[@]}" "${W128[@]}" "${W256D[@]}" --set meta.meta_batch_size=512 & PIDS+=($!)
elif [ "${PLAN}" = session21 ]; then  # prepared in the twenty-first session (no GPU lent then), one call:
  # the 512-tasks screen's confirmation over 3 seeds with its control at the same batch (models back for test
  # users on the 2-core machine; `sasrec64`'s are gpu19's); screened on validation: 1,024 tasks per step, and
  # one inner step instead of three (half the cost per task; analysis21 found the gain in how FOMAML fits
  # the training tasks, not in the test-time steps). LIMIT=540: nine runs share the GPU.
  B512=(--set meta.meta_batch_size=512)
  for s in 0 1 2; do
    one fomaml128-d05-b512 $s "${FOMAML[@]}" "${W128[@]}" "${B512[@]}" & PIDS+=($!)
    one none128-d05-b512 $s "${FOMAML[@]}" --set meta.algorithm=none "${W128[@]}" "${B512[@]}" & PIDS+=($!)
  done
  for s in 0 1; do
    one fomaml128-d05-b512-steps1 $s "${FOMAML[@]}" "${W128[@]}" "${B512[@]}" --set meta.adaptation_steps=1 & PIDS+=($!)
  done
  one fomaml128-d05-b1024 0 "${FOMAML[@]}" "${W128[@]}" --set meta.meta_batch_size=1024 & PIDS+=($!)
elif [ "${PLAN}" = ml21 ]; then  # prepared in the twenty-first session: MovieLens 100K's three arms again,
  # validated every 100 steps (500 kept the first or second validation on ~750 training users) and FOMAML
  # validated at the adaptation its export serves best there (train.eval_steps=0); models back
  OFTEN=(--set train.log_every=100 --set train.eval_every=100 --set train.early_stop_patience=5)
  CFG=("${FOMAML[@]}" "${W128[@]}" "${B256[@]}")
  for s in 0 1 2; do
    one ml-sasrec64 $s --ml100k "${OFTEN[@]}" & PIDS+=($!)
    one ml-fomaml128 $s --ml100k "${CFG[@]}" "${OFTEN[@]}" --set train.eval_steps=0 & PIDS+=($!)
    one ml-none128 $s --ml100k "${CFG[@]}" --set meta.algorithm=none "${OFTEN[@]}" & PIDS+=($!)
  done
else  # PLAN=confirm, the second call: 3 seeds of the screen's best, its control without an inner loop, and
  # the published `sasrec`; their models come back (exports, weights rounded to fp16 to fit the transfer)
  # for test users' evaluation on the 2-core machine
  for s in 0 1 2; do
    one sasrec64 $s & PIDS+=($!)
    one fomaml128-d05-b256 $s "${FOMAML[@]}" "${W128[@]}" "${B256[@]}" & PIDS+=($!)
    one none128-d05-b256 $s "${FOMAML[@]}" --set meta.algorithm=none "${W128[@]}" "${B256[@]}" & PIDS+=($!)
  done
fi
wait "${PIDS[@]}"
kill "$DMON" 2>/dev/null
python3 docs/results/amazon-sports-screens/gpu19/summarise.py "$OUT/logs" "$OUT/runs" | tee "$OUT/summary.md"
export_back() {  # the runs' models, exported with their weights rounded to fp16 to fit the transfer
  for run in "$@"; do
    python3 -m metarec_dist.cli export --checkpoint "$run" --out "$OUT/exports/$(basename "$run")" --no-fuse > /dev/null
  done
  # KEEP=/tmp/gpu22: full-precision copies stay on the device for a second call that evaluates them there
  # (gpu22/device_eval.sh) while the machine is still warm; the fp16 copies still come back in case it is not
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp -r "$OUT/exports" "$KEEP/"; fi
  python3 docs/results/amazon-sports-screens/gpu19/half.py "$OUT"/exports/*/*.safetensors
}
case "${PLAN:-screen}" in confirm|session20|session21|ml21) ;; *)
  tar czf "$OUT/logs.tgz" -C "$OUT" logs; exit 0 ;; esac
if [ "$PLAN" = session21 ]; then
  export_back "$OUT"/runs/*-b512-s[0-9]
  for s in 0 1 2; do for m in fomaml128-d05-b512 none128-d05-b512; do
    tar czf "$OUT/$m-s$s.tgz" -C "$OUT" "exports/$m-s$s"
  done; done
  tar czf "$OUT/logs.tgz" -C "$OUT" logs
  rm -rf "$OUT/logs" "$OUT/exports" "$OUT/runs"
  exit 0
fi
if [ "$PLAN" = session20 ] || [ "$PLAN" = ml21 ]; then
  export_back "$OUT"/runs/ml-*-s[0-9]
  for m in ml-sasrec64 ml-fomaml128 ml-none128; do tar czf "$OUT/$m.tgz" -C "$OUT" exports/$m-s0 exports/$m-s1 exports/$m-s2; done
  tar czf "$OUT/logs.tgz" -C "$OUT" logs
  rm -rf "$OUT/logs" "$OUT/exports" "$OUT/runs"
  exit 0
fi
export_back "$OUT"/runs/*-s[0-9]
tar czf "$OUT/sasrec64.tgz" -C "$OUT" logs exports/sasrec64-s0 exports/sasrec64-s1 exports/sasrec64-s2
for s in 0 1 2; do for m in fomaml128-d05-b256 none128-d05-b256; do
  tar czf "$OUT/$m-s$s.tgz" -C "$OUT" "exports/$m-s$s"
done; done
rm -rf "$OUT/logs" "$OUT/exports" "$OUT/runs"
