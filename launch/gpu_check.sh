#!/usr/bin/env bash
# One prepared GPU check (< 8 minutes on one H200): ZeRO-2 and ZeRO-3 in bf16 on the ~100M config
# (configs/base-100m.yaml), then ZeRO-3 on the ~1B config (configs/xl-1b.yaml, its 8-worker layout folded onto
# one GPU: one worker, no accumulation); one GPU, DeepSpeed engine, synthetic data with a 20k-item catalogue.
# Prints and writes ($OUT or ./gpu_check_out) one JSON per run: tasks/s, tokens/s, MFU (989 TFLOP/s dense
# bf16 peak, FLOPs counted by metarec_dist/metrics/flops.py incl. the inner loop), peak GPU memory.
# Throughput leaves out the first 10 steps (CUDA context, kernel selection, allocator warm-up).
#
# The lent H200 image (torch 2.11, transformers 5.17, pyarrow, pandas, ninja, py-cpuinfo, msgpack, xxhash) has
# no deepspeed, datasets or pydantic and no network: carry them as wheels in .whl/ (git-ignored through
# .git/info/exclude). What ran in session 18 (5.7 MB; ray and wandb are not needed by the local backend):
#   mkdir -p .whl && cd .whl && python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d . datasets==5.2.0 dill multiprocess hjson \
#       pydantic pydantic-core annotated-types typing-inspection "typing_extensions>=4.16"
#   # PyPI has no deepspeed wheel: take the one pip built from the sdist for .venv (pure Python), e.g.
#   cp ~/.cache/pip/wheels/*/*/*/*/deepspeed-0.19.8-py3-none-any.whl .
# (pydantic needs the pydantic-core it names, exactly: keep one version of each.)
# Then run with carry [".whl"]:  bash launch/gpu_check.sh
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu_check_out}"
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export WANDB_MODE=disabled PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"
python3 -c "import torch, transformers, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)" | tee "$OUT/versions.txt"
COMMON=(--set runtime.backend=local --set runtime.deepspeed=true
  --set runtime.num_workers=1 --set runtime.use_gpu=true --set runtime.precision=bf16
  --set data.format=synthetic --set data.synthetic_users=20000 --set data.synthetic_items=20000
  --set data.synthetic_min_len=61 --set data.synthetic_max_len=120 --set data.cache=false
  --set train.meta_steps=60 --set train.timing_warmup=10 --set train.log_every=20 --set train.eval_every=0
  --set train.eval_users=256
  --set checkpoint.every=0 --set checkpoint.resume=false --set logging.wandb=off
  --set "runtime.storage_path=$OUT/runs")
run() {  # name config extra-settings...
  local name=$1 config=$2; shift 2
  echo "== $name: $config, bf16, 1 GPU =="
  timeout 240 python3 -m metarec_dist.cli train --config "$config" "${COMMON[@]}" "$@" \
    --set runtime.run_name="$name" --json "$OUT/$name.json" 2>&1 | tail -25
  [ -f "$OUT/$name.json" ] && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: d.get(k) for k in ('tasks_per_s','tokens_per_s','mfu','peak_memory_gb','loss')})" "$OUT/$name.json"
  rm -rf "$OUT/runs/$name"  # the final checkpoint (16 GB at 1B parameters) is not needed
}
run zero2 configs/base-100m.yaml --set runtime.zero_stage=2
run zero3 configs/base-100m.yaml --set runtime.zero_stage=3
run xl1b-zero3 configs/xl-1b.yaml --set runtime.zero_stage=3 --set runtime.grad_accum=1
rm -rf "$OUT/runs"
