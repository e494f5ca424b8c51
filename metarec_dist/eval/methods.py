"""Evaluate one method end to end: choose its adaptation on validation users, then score the held-out split.

The methods of the cold-start comparison: ``popularity`` (training users' counts), and every trained model
under its algorithm's test-time protocol:

- ``fomaml`` / ``reptile``: adapt the fast weights on the support; steps and inner lr tuned on validation.
- ``none`` / ``sasrec``: no adaptation (steps = 0), or with ``finetune`` the same inner loop run as
  test-time fine-tuning, its steps and lr tuned on validation (steps = 0 stays a candidate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarec_dist.config import EvalConfig, MetaConfig
from metarec_dist.eval.harness import MethodResult, run_scorer
from metarec_dist.eval.scorers import PopularityScorer, model_scorer
from metarec_dist.eval.tuning import Adaptation, adaptation_grid, tune_adaptation
from metarec_dist.meta import ALGORITHMS
from metarec_dist.models.recommender import SeqRecommender


@dataclass
class Splits:
    """Per-user sequences of the three disjoint user groups (item ids 1..num_items)."""

    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    num_items: int

    @classmethod
    def from_prepared(cls, prepared: Any) -> Splits:
        return cls(*(prepared.sequences(s) for s in ("train", "valid", "test")), prepared.num_items)

    def get(self, split: str) -> list[np.ndarray]:
        if split not in ("valid", "test"):
            raise ValueError(
                f"--split must be valid or test (training users are not cold-start), got {split!r}"
            )
        return getattr(self, split)


def method_name(algorithm: str, finetune: bool) -> str:
    # Algorithms trained without an inner loop do not adapt by default; +finetune marks that they did.
    return f"{algorithm}+finetune" if finetune and not ALGORITHMS[algorithm].adapts else algorithm


def choose_adaptation(
    model: SeqRecommender,
    meta: MetaConfig,
    valid: list[np.ndarray],
    shots: Sequence[int],
    support_max: int,
    eval_cfg: EvalConfig,
    finetune: bool = False,
    fixed: tuple[int, float] | None = None,
    algorithm_state: dict[str, torch.Tensor] | None = None,
) -> Adaptation:
    """``fixed`` (steps, lr) skips the search; otherwise the grid around the trained ``meta`` settings for
    this algorithm, on validation users."""
    if fixed is not None:
        return Adaptation(*fixed)
    algorithm = meta.algorithm
    adapts = ALGORITHMS[algorithm].adapts
    if not adapts and not finetune:
        return Adaptation(0, meta.inner_lr)
    grid = adaptation_grid(meta.adaptation_steps, meta.inner_lr, finetune=not adapts)
    return tune_adaptation(model, algorithm, valid, shots, support_max, eval_cfg, grid, algorithm_state)


def evaluate_model(
    name: str,
    model: SeqRecommender,
    algorithm: str,
    adaptation: Adaptation,
    sequences: list[np.ndarray],
    shots: Sequence[int],
    support_max: int,
    eval_cfg: EvalConfig,
    algorithm_state: dict[str, torch.Tensor] | None = None,
) -> MethodResult:
    scorer = model_scorer(model, algorithm, adaptation.inner_lr, algorithm_state)
    per_user = run_scorer(scorer, model.bos_id, sequences, shots, support_max, eval_cfg, adaptation.steps)
    return MethodResult(name, per_user, {"algorithm": algorithm, "adaptation": adaptation.as_dict()})


def evaluate_popularity(
    splits: Splits, sequences: list[np.ndarray], shots: Sequence[int], eval_cfg: EvalConfig
) -> MethodResult:
    scorer = PopularityScorer(splits.train, splits.num_items)
    per_user = run_scorer(scorer, splits.num_items + 1, sequences, shots, max(shots), eval_cfg)
    return MethodResult("popularity", per_user, {"counted_on": "train users"})
