"""Training engines: the ``TrainEngine`` protocol the trainer drives, and ``LocalEngine``.

One meta-step is ``out = engine.meta_step(batch)``, ``engine.backward(out.loss)``, ``engine.step()``;
evaluation is ``engine.score(batch, steps)`` (RecBole's ``full_sort_predict``: scores of every item),
``engine.score_chunks(batch, steps, sink)`` (the same scores, handed to ``sink`` chunk by chunk) or
``engine.score_points(batch, points, sink)`` (an adaptation search's points in one pass).
``LocalEngine`` is the single-process engine (plain PyTorch): it lets the same trainer run under pytest
without DeepSpeed, and it is the reference the distributed runs are compared against. It follows DeepSpeed's
gradient-accumulation semantics (``step()`` on every micro-batch, the update only at the boundary) so the
trainer never needs to know which engine it drives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from metarec_dist.config import OptimConfig

if TYPE_CHECKING:
    from metarec_dist.meta import MetaLearner, MetaStepOutput
    from metarec_dist.meta.learner import PointSink
    from metarec_dist.metrics.ranking import ScoreSink
    from metarec_dist.tasks.types import MetaBatch


class TrainEngine(Protocol):
    """What the trainer and the evaluation call on an engine (``LocalEngine``, ``DeepSpeedEngine``)."""

    device: torch.device
    module: nn.Module  # the unwrapped meta-learner

    def meta_step(self, batch: MetaBatch, track_adaptation: bool = True) -> MetaStepOutput:
        """The meta-loss of one micro-batch and its metrics (forward only)."""
        ...

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        """Scores ``[T, V]`` of every item after ``steps`` inner steps on each task's support (None: the
        algorithm's own). Under ZeRO-3 a collective: every rank calls it with the same number of batches."""
        ...

    def score_chunks(self, batch: MetaBatch, steps: int | None, sink: ScoreSink) -> None:
        """``score`` in bounded memory: one forward that calls ``sink(score_range)``, where
        ``score_range(lo, hi)`` scores item columns ``lo..hi-1``. Under ZeRO-3 a collective, too."""
        ...

    def score_points(self, batch: MetaBatch, points: Sequence[tuple[int, float]], sink: PointSink) -> None:
        """``sink(i, score_range)`` for each (steps, inner lr) point i of an adaptation search, in one
        forward (``MetaLearner.score_points``). Under ZeRO-3 a collective, too."""
        ...

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self) -> None:
        """Once per micro-batch; the optimizer steps at the gradient-accumulation boundary."""
        ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def get_lr(self) -> list[float]: ...

    def get_global_grad_norm(self) -> float | None: ...

    def save_checkpoint(self, save_dir: str, tag: str) -> None: ...

    def load_checkpoint(self, load_dir: str, tag: str) -> None:
        """Loads every file of ``tag`` or raises ``ValueError``: never a silent partial load."""
        ...


def make_optimizer(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW from torch: no JIT-compiled kernels, so it also works for DeepSpeed on CPU. ``params`` are
    parameters (frozen ones are skipped) or parameter groups (DeepSpeed's ZeRO hands those over)."""
    params = list(params)
    if not (params and isinstance(params[0], dict)):
        params = [p for p in params if p.requires_grad]
    return torch.optim.AdamW(
        params,
        lr=cfg.lr,
        betas=(cfg.betas[0], cfg.betas[1]),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
    )


def lr_lambda(cfg: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up then constant or cosine decay to 10%: warm-up keeps early meta-steps, whose adapted
    weights are still noise, from knocking the backbone around."""

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> Any:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))


def apply_optim_settings(scheduler: Any, cfg: OptimConfig) -> None:
    """After loading a checkpoint: this run's ``optim.*`` values replace the saved ones.

    ``load_state_dict`` restores every param group's lr, initial_lr, weight decay, betas and eps and the
    scheduler's ``base_lrs`` from the checkpoint, so a changed setting that a resume reports would otherwise
    be ignored. The schedule's shape (warm-up, cosine, length) is already this run's: ``LambdaLR`` keeps the
    lambdas it was built with and restores only its step. The lr is set for the resumed step at once (not at
    the next scheduler step), so the resumed run follows the new config's schedule from there on."""
    groups = scheduler.optimizer.param_groups
    scheduler.base_lrs = [cfg.lr] * len(groups)
    for group, factor in zip(groups, scheduler.lr_lambdas, strict=True):
        group.update(
            initial_lr=cfg.lr,
            lr=cfg.lr * factor(scheduler.last_epoch),
            weight_decay=cfg.weight_decay,
            betas=(cfg.betas[0], cfg.betas[1]),
            eps=cfg.eps,
        )
    scheduler._last_lr = [g["lr"] for g in groups]  # what get_last_lr() reports


class LocalEngine:
    def __init__(
        self,
        module: MetaLearner,
        optim: OptimConfig,
        total_steps: int,
        grad_accum: int = 1,
        device: torch.device | None = None,
    ) -> None:
        self.module = module
        self.optim = optim
        self.optimizer = make_optimizer(module.parameters(), optim)
        self.lr_scheduler = make_scheduler(self.optimizer, optim, total_steps)
        self.grad_clip = optim.grad_clip
        self.grad_accum = grad_accum
        self.micro_steps = 0
        self.global_steps = 0
        self._grad_norm: float | None = None
        self.device = device or torch.device("cpu")

    def meta_step(self, batch: MetaBatch, track_adaptation: bool = True) -> MetaStepOutput:
        return self.module.meta_step(batch, track_adaptation)

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        return self.module.score(batch, steps)

    def score_chunks(self, batch: MetaBatch, steps: int | None, sink: ScoreSink) -> None:
        self.module.score_chunks(batch, steps, sink)

    def score_points(self, batch: MetaBatch, points: Sequence[tuple[int, float]], sink: PointSink) -> None:
        self.module.score_points(batch, points, sink)

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)

    def eval(self) -> None:
        self.module.eval()

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def is_gradient_accumulation_boundary(self) -> bool:
        return (self.micro_steps + 1) % self.grad_accum == 0

    def step(self) -> None:
        if self.is_gradient_accumulation_boundary():
            params = [p for p in self.module.parameters() if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip > 0 else math.inf)
            self._grad_norm = float(norm)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_steps += 1
        self.micro_steps += 1

    def get_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def get_global_grad_norm(self) -> float | None:
        return self._grad_norm

    def save_checkpoint(self, save_dir: str | Path, tag: str) -> None:
        """Weights as safetensors; optimizer and scheduler state in a file of tensors and numbers that loads
        with ``weights_only=True`` (resuming never unpickles arbitrary objects)."""
        from safetensors.torch import save_file

        folder = Path(save_dir) / tag
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        extra = {"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict()}
        extra["steps"] = torch.tensor([self.global_steps, self.micro_steps])
        torch.save(extra, folder / "optimizer.pt")

    def load_checkpoint(self, load_dir: str | Path, tag: str) -> None:
        from safetensors.torch import load_file

        folder = Path(load_dir) / tag
        for name in ("model.safetensors", "optimizer.pt"):
            if not (folder / name).is_file():
                raise ValueError(f"checkpoint {folder} is missing {name}")
        self.module.load_state_dict(load_file(str(folder / "model.safetensors")))
        extra = torch.load(folder / "optimizer.pt", weights_only=True)
        self.optimizer.load_state_dict(extra["optimizer"])
        self.lr_scheduler.load_state_dict(extra["lr_scheduler"])
        apply_optim_settings(self.lr_scheduler, self.optim)
        self.global_steps, self.micro_steps = (int(x) for x in extra["steps"])
