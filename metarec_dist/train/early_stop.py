"""Early stopping on the periodic validation: the loop asks it whether to stop, and at the end it puts the
best validated weights back.

Why in memory rather than a "best" checkpoint: checkpoints are pruned to ``checkpoint.keep`` and are what a
resume continues from; the best weights are a different thing (an earlier step's model), and at the sizes
early stopping is for (models that train to convergence in minutes) a copy of the weights is cheap. The
final checkpoint therefore holds the best weights, with the stopping step's optimizer and task-stream state;
its metrics name the step the weights are from (``early_stop/best_step``). A periodic checkpoint carries the
copy too (``early_stop.safetensors``), so a run resumed after its best validation still ends with those
weights, as the uninterrupted run does.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

log = logging.getLogger("metarec")


def validation_criterion(metrics: dict[str, Any]) -> float:
    """The number early stopping watches: NDCG@10 averaged over the validated support sizes (cold start:
    ``val/ndcg@10@k<K>``), or the leave-one-out NDCG@10."""
    if "val/loo_ndcg@10" in metrics:
        return float(metrics["val/loo_ndcg@10"])
    values = [float(v) for k, v in metrics.items() if k.startswith("val/ndcg@10@k")]
    if not values:
        raise ValueError(f"no validation NDCG@10 in {sorted(metrics)}: is there a validation split?")
    return sum(values) / len(values)


def criterion_parts(metrics: dict[str, Any]) -> str:
    """The criterion's terms for the log, ``"K = 1 0.02988, K = 3 0.03578"`` (empty for leave-one-out):
    the mean alone hides which support size still improves when the others have peaked."""
    shots = sorted(int(k.rsplit("@k", 1)[1]) for k in metrics if k.startswith("val/ndcg@10@k"))
    return ", ".join(f"K = {k} {float(metrics[f'val/ndcg@10@k{k}']):.5f}" for k in shots)


class EarlyStopping:
    """Counts validations without a new best criterion; ``should_stop`` after ``patience`` of them. Keeps a
    CPU copy of ``module``'s state at the best validation."""

    def __init__(self, patience: int, module: nn.Module) -> None:
        self.patience, self.module = patience, module
        self.best, self.best_step, self.bad = -math.inf, 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.restored = False  # the module holds the best weights (saved with the final checkpoint)

    def update(self, step: int, score: float, parts: str = "") -> bool:
        """Record the validation of ``step``; True if it is a new best (ties are not: the earlier model).
        ``parts`` (:func:`criterion_parts`) goes into the log line beside the criterion."""
        better = score > self.best
        if better:
            self.best, self.best_step, self.bad = score, step, 0
            state = self.module.state_dict()
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        else:
            self.bad += 1
        # The validation curve in the log: runs without a metrics logger (reproduce) keep it too.
        log.info(
            "validation at meta-step %d: criterion %.5f%s (best %.5f at step %d, %d/%d without a new best)",
            step,
            score,
            f" [NDCG@10 {parts}]" if parts else "",
            self.best,
            self.best_step,
            self.bad,
            self.patience,
        )
        return better

    @property
    def should_stop(self) -> bool:
        return self.bad >= self.patience

    def restore_best(self, step: int) -> dict[str, Any]:
        """Load the best weights into the module (unless they are the current ones); the report's lines."""
        if self.best_step == 0:  # never validated: nothing to choose from
            return {}
        if self.best_state is None and self.restored:
            # Re-running a finished run: its final checkpoint, just loaded, holds the best weights already.
            log.info("early stopping: the checkpoint holds step %d's weights (the best)", self.best_step)
        elif self.best_state is None:
            # The best validation came before this process resumed: its weights were not saved.
            log.warning(
                "early stopping: the best validation (step %d) was before the resume; keeping step %d's",
                self.best_step,
                step,
            )
        elif self.best_step != step:
            self.module.load_state_dict(self.best_state)
            log.info("early stopping: restored step %d's weights (criterion %.5f)", self.best_step, self.best)
        self.restored = self.best_state is not None or self.restored
        return {"early_stop/best_step": self.best_step, "early_stop/best_criterion": self.best}

    # Saved with the checkpoint (counters, and whether the module holds the best weights; not the weights
    # themselves): a resumed run stops where the uninterrupted one would have.
    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad, "restored": self.restored}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "best_step" not in state:  # a checkpoint of a run without early stopping: start counting now
            return
        self.best, self.best_step, self.bad = float(state["best"]), int(state["best_step"]), int(state["bad"])
        self.best_state = None
        self.restored = bool(state.get("restored", False))

    # The best weights, in the checkpoint beside the counters (none once the module holds them: a final
    # checkpoint's weights are the best ones already).
    def tensors(self) -> dict[str, torch.Tensor]:
        if self.best_state is None or self.restored:
            return {}
        return {k: v.contiguous() for k, v in self.best_state.items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor] | None) -> None:
        """``tensors``: the checkpoint's copy of the best weights (None: it has none, e.g. written before
        they were saved: ``restore_best`` then keeps the last weights and says so)."""
        self.best_state = tensors
