"""Where a trainer runs: rank, world size, device, metric reporting, checkpoint registry, engine factory.

The trainer only talks to a ``WorkerContext``. ``LocalContext`` runs it in this process (pytest, the CPU
quickstart); ``metarec_dist.runtime.ray_worker.RayContext`` runs it inside a Ray Train worker with a
DeepSpeed engine. Same trainer, same code path for the meta-step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarec_dist.config import OptimConfig, RuntimeConfig
from metarec_dist.runtime.engine import LocalEngine


class WorkerContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def build_engine(
        self, module: nn.Module, optim: OptimConfig, runtime: RuntimeConfig, total_steps: int, micro_batch: int
    ) -> Any:
        """A LocalEngine, or a DeepSpeed engine when ``runtime.deepspeed`` is set (the Ray path always is)."""
        if runtime.deepspeed:
            from metarec_dist.runtime.deepspeed_engine import build_deepspeed_engine

            return build_deepspeed_engine(module, optim, runtime, total_steps, micro_batch, self.world_size)
        return LocalEngine(module, optim, total_steps, runtime.grad_accum)

    def all_reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average scalar metrics over ranks (every rank must call it, the same number of times)."""
        if self.world_size == 1 or not torch.distributed.is_initialized():
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        """Hand metrics (and a complete checkpoint) to the driver."""

    def latest_checkpoint_dir(self) -> Path | None:
        return None


class LocalContext(WorkerContext):
    """This process, rank 0 of 1. Checkpoints are found by scanning the run directory."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.run_dir = run_dir
        self.reports: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        self.reports.append({**metrics, "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None})

    def latest_checkpoint_dir(self) -> Path | None:
        if self.run_dir is None:
            return None
        from metarec_dist.checkpoint import latest_complete

        return latest_complete(self.run_dir)
