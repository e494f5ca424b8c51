"""Where a trainer runs: rank, world size, device, collectives, checkpoint staging, metric reporting.

The trainer only talks to a ``WorkerContext``. ``LocalContext`` runs it in this process (pytest, the CPU
quickstart); ``metarec_dist.runtime.ray_worker.RayContext`` runs it inside a Ray Train worker with a
DeepSpeed engine. Same trainer, same meta-step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metarec_dist.config import OptimConfig, RuntimeConfig
from metarec_dist.runtime.engine import LocalEngine, TrainEngine

if TYPE_CHECKING:
    from metarec_dist.meta import MetaLearner


class WorkerContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    # Where the run's relative data files were read (a Ray run: the driver's folder, which it passes on);
    # every checkpoint records it. None: this process's own folder where it read them (LocalContext).
    data_folder: str | None = None
    # A context whose ranks reduce their gradients through DeepSpeed (a Ray Train worker) builds a DeepSpeed
    # engine whatever ``runtime.deepspeed`` says.
    always_deepspeed: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def build_engine(
        self,
        module: MetaLearner,
        optim: OptimConfig,
        runtime: RuntimeConfig,
        total_steps: int,
        micro_batch: int,
    ) -> TrainEngine:
        """A LocalEngine, or a DeepSpeed engine when ``runtime.deepspeed`` or ``always_deepspeed`` is set."""
        if runtime.deepspeed or self.always_deepspeed:
            from metarec_dist.runtime.deepspeed_engine import build_deepspeed_engine

            return build_deepspeed_engine(module, optim, runtime, total_steps, micro_batch, self.world_size)
        return LocalEngine(module.to(self.device), optim, total_steps, runtime.grad_accum, self.device)

    # Collectives: every rank must call them the same number of times.
    def _distributed(self) -> bool:
        return self.world_size > 1 and torch.distributed.is_initialized()

    def barrier(self) -> None:
        if self._distributed():
            torch.distributed.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        if not self._distributed():
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def all_reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        """Average scalar metrics over ranks."""
        if not self._distributed():
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    # Checkpoints and reports.
    run_dir: Path | None = None  # the run folder on this machine's file system, when there is one

    @property
    def has_checkpoint_storage(self) -> bool:
        return False

    def checkpoint_folder(self, step: int) -> Path:
        """Where this rank writes the checkpoint of ``step``."""
        raise ValueError("this worker context has no checkpoint storage (give it a run directory)")

    def saved_checkpoint_path(self, step: int) -> Path | None:
        """Where the complete checkpoint of ``step`` ends up, when that is on this machine's file system."""
        return None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        """Hand metrics (and a complete checkpoint) to whoever runs the job."""

    def prune_checkpoints(self, resumed: Path | None = None) -> None:
        """Delete the run's checkpoints beyond ``checkpoint.keep`` (after a save, and once a resumed run has
        loaded ``resumed``, which is kept: a lowered ``keep`` frees disk before the next save)."""

    @contextlib.contextmanager
    def resume_dir(self, resume: bool = True) -> Iterator[Path | None]:
        """The latest complete checkpoint to resume from, or None (``checkpoint.resume``: ``resume``)."""
        yield None


class LocalContext(WorkerContext):
    """This process, rank 0 of 1. Checkpoints live in ``<run_dir>/checkpoints/step_NNNNNN``."""

    def __init__(self, run_dir: Path | None = None, keep: int = 2, device: str | None = None) -> None:
        self.run_dir, self.keep = run_dir, keep
        self.device = torch.device(device) if device else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # before DeepSpeed creates its process group

    @property
    def has_checkpoint_storage(self) -> bool:
        return self.run_dir is not None

    def checkpoint_folder(self, step: int) -> Path:
        folder = self.saved_checkpoint_path(step)
        return super().checkpoint_folder(step) if folder is None else folder

    def saved_checkpoint_path(self, step: int) -> Path | None:
        from metarec_dist.checkpoint import step_dir

        return None if self.run_dir is None else step_dir(self.run_dir, step)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        if checkpoint_dir is not None:
            self.prune_checkpoints()

    def prune_checkpoints(self, resumed: Path | None = None) -> None:
        if self.run_dir is not None:
            from metarec_dist.checkpoint import prune

            prune(self.run_dir, self.keep, [resumed] if resumed is not None else [])

    @contextlib.contextmanager
    def resume_dir(self, resume: bool = True) -> Iterator[Path | None]:
        from metarec_dist.checkpoint import resume_point
        from metarec_dist.errors import UserError

        if self.run_dir is None:
            yield None
            return
        # Checked before training: otherwise the run trains from step 0 and stops at its first save.
        root = self.run_dir / "checkpoints"
        if root.exists() and not root.is_dir():
            raise UserError(
                f"{root} is a file, where this run keeps its checkpoints: move it away, or start the run "
                "under a new name (--set runtime.run_name=NEW)"
            )
        yield resume_point(self.run_dir, resume)
