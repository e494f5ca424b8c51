"""Test-time adaptation settings (inner steps, inner lr) chosen on VALIDATION users only.

The trained values are always in the grid, and so is "no adaptation" (steps = 0): if adapting hurts on
validation users it is switched off rather than reported. One setting for all shot counts: averaging the
selection criterion over K uses every validation user once per K, which matters with ~100 of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from metarec_dist.config import EvalConfig
from metarec_dist.eval.harness import run_scorer
from metarec_dist.eval.scorers import Diverged, model_scorer
from metarec_dist.models.recommender import SeqRecommender

STEP_GRID = (0, 1, 3, 5, 10)
LR_FACTORS = (0.25, 0.5, 1.0, 2.0)
FINETUNE_LRS = (0.05, 0.1, 0.2, 0.5, 1.0)  # `none`/`sasrec` were never trained to adapt: no trained lr
CRITERION = "ndcg@10"


@dataclass
class Adaptation:
    steps: int
    inner_lr: float
    val_score: float | None = None  # mean validation NDCG@10 over the shot counts
    grid_size: int = 1
    selected_on: str = "fixed"  # "valid" when searched on validation users

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "steps": self.steps,
            "inner_lr": self.inner_lr,
            f"val_{CRITERION}": self.val_score,
            "grid_size": self.grid_size,
            "selected_on": self.selected_on,
        }


def adaptation_grid(trained_steps: int, trained_lr: float, finetune: bool) -> list[tuple[int, float]]:
    """(steps, inner_lr) candidates; steps = 0 appears once (the lr is irrelevant without a step)."""
    lrs = FINETUNE_LRS if finetune else sorted({round(trained_lr * f, 6) for f in LR_FACTORS} | {trained_lr})
    steps = sorted(set(STEP_GRID) | ({trained_steps} if not finetune else set()))
    return [(0, trained_lr)] + [(s, lr) for s in steps if s > 0 for lr in lrs]


def tune_adaptation(
    model: SeqRecommender,
    algorithm: str,
    valid: list[np.ndarray],
    shots: Sequence[int],
    support_max: int,
    eval_cfg: EvalConfig,
    grid: list[tuple[int, float]],
    algorithm_state: dict[str, torch.Tensor] | None = None,
) -> Adaptation:
    """The grid point with the best mean validation NDCG@10 over ``shots`` (ties: fewer steps, lower lr)."""
    if not valid:
        raise ValueError("no validation users to choose the adaptation steps/lr on (data.valid_frac is 0?)")
    best: Adaptation | None = None
    for steps, lr in sorted(grid):
        try:
            res = run_scorer(
                model_scorer(model, algorithm, lr, algorithm_state),
                model.bos_id,
                valid,
                shots,
                support_max,
                eval_cfg,
                steps,
            )
        except Diverged:  # too large an inner lr for this many steps: not a candidate
            continue
        score = float(np.mean([res[k][CRITERION].mean() for k in shots]))
        if best is None or score > best.val_score + 1e-12:
            best = Adaptation(steps, lr, score, selected_on="valid")
    if best is None:
        raise ValueError("every adaptation setting gives non-finite scores: the model itself is broken (NaN)")
    best.grid_size = len(grid)
    return best
