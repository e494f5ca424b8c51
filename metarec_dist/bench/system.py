"""``metarec bench system``: the same training work in this process vs on Ray + DeepSpeed (1 worker).

Both sides run the same config for the same number of meta-steps and report the trainer's own
``tasks_per_s``, timed over the training loop after a warm-up of a quarter of the steps
(``train.timing_warmup``): start-up, the final evaluation and the final checkpoint are outside it, and so
are the first steps, which on a fresh Ray cluster share the cores with actors still starting (Ray Data's,
Ray Train's). The fixed start-up cost is reported apart, as wall-clock seconds of each side. The Ray worker
gets all of this machine's CPUs so both sides use the same threads.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import torch

from metarec_dist.config import Config, with_overrides


def _variant(cfg: Config, steps: int, *extra: str) -> Config:
    """Only the training loop is timed: no periodic evaluation, checkpoints, resume or W&B."""
    return with_overrides(
        cfg,
        [
            f"train.meta_steps={steps}",
            f"train.timing_warmup={steps // 4}",
            f"train.log_every={steps}",
            "train.eval_every=0",
            "checkpoint.every=0",
            "runtime.dashboard=false",
            "checkpoint.resume=false",
            "logging.wandb=off",
            "logging.verbose=false",
            *extra,
        ],
    )


def run_system_bench(cfg: Config, steps: int = 400) -> dict[str, Any]:
    from metarec_dist.data import prepare_data
    from metarec_dist.runtime.context import LocalContext
    from metarec_dist.runtime.ray_launcher import shutdown_ray, train_on_ray
    from metarec_dist.train.trainer import MetaTrainer

    local = _variant(  # plain PyTorch in this process: none of the Ray run's DeepSpeed settings
        cfg,
        steps,
        "runtime.backend=local",
        "runtime.num_workers=1",
        "runtime.zero_stage=0",
        "runtime.offload_optimizer=false",
        "runtime.offload_param=false",
        "runtime.deepspeed_override=null",
    )
    data = prepare_data(local.data).user_splits()

    walls: dict[str, float] = {}

    def inproc() -> float:
        threads = torch.get_num_threads()
        if local.runtime.torch_threads:  # as `metarec train` and the Ray worker do
            torch.set_num_threads(local.runtime.torch_threads)
        start = time.perf_counter()
        try:
            return MetaTrainer(local, LocalContext(None), data).fit()["tasks_per_s"]
        finally:
            walls["inproc_wall_s"] = time.perf_counter() - start
            torch.set_num_threads(threads)

    # A-B-A: the in-process run before and after the Ray run, so a drift in the machine's speed during
    # the measurement (a shared 2-core VM) does not land on one side only.
    before = inproc()
    try:
        with tempfile.TemporaryDirectory(prefix="metarec-bench-system-") as storage:
            remote = _variant(
                cfg,
                steps,
                "runtime.backend=ray",
                "runtime.num_workers=1",
                f"runtime.cpus_per_worker={os.cpu_count() or 1}",
                f"runtime.storage_path={storage}",
                "runtime.run_name=bench-system",
            )
            start = time.perf_counter()
            ray_ds = train_on_ray(remote)  # Ray start, workers, Ray Data, DeepSpeed set-up, training
            walls["ray_ds_wall_s"] = time.perf_counter() - start
    finally:  # also on a failure or Ctrl-C: the cluster this bench started does not outlive its run
        shutdown_ray()  # and the second in-process run must not share the cores with an idle cluster
    after = inproc()
    inproc_tasks_per_s = (before + after) / 2
    return {
        "bench": "system",
        "meta_steps": steps,
        "timed_steps": steps - local.train.timing_warmup,
        "tasks_per_step": cfg.meta.meta_batch_size,
        "zero_stage": cfg.runtime.zero_stage,
        "inproc_tasks_per_s": inproc_tasks_per_s,
        "inproc_runs_tasks_per_s": [before, after],
        "ray_ds_tasks_per_s": ray_ds["tasks_per_s"],
        "overhead_ratio": ray_ds["tasks_per_s"] / inproc_tasks_per_s,
        **walls,
    }
