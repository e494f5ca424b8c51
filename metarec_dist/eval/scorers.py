"""Scorers for :func:`metarec_dist.train.evaluation.evaluate_cold_start`: anything with
``score(batch, steps) -> [U, V]`` is evaluated by the same harness, so baselines and
meta-learned models share the users, the support masking and the metrics."""

from __future__ import annotations

import numpy as np
import torch

from metarec_dist.config import MetaConfig
from metarec_dist.meta import MetaLearner, build_algorithm
from metarec_dist.metrics.popularity import popularity_scores
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.types import MetaBatch


class PopularityScorer:
    """Most-popular items, counted over TRAINING users only; the same list for every user."""

    def __init__(self, train_sequences: list[np.ndarray], num_items: int) -> None:
        self.scores = popularity_scores(train_sequences, num_items)[1:]  # column j = item j + 1

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        return self.scores.expand(batch.num_tasks, -1)


class Diverged(ValueError):
    """Test-time adaptation produced non-finite scores (an inner lr too large for the steps)."""


class AdaptingScorer:
    """The meta-learner in eval mode; the number of adaptation steps comes per call (``steps``).
    ``none``/``sasrec`` adapt too when asked (steps > 0): test-time fine-tuning of the same fast weights with
    the same inner loop. Non-finite scores raise :class:`Diverged` instead of reaching the metrics, where a
    NaN row would tie every item and win the optimistic tie-break. ``algorithm_state``: the trained
    algorithm's own parameters (Meta-SGD's rates)."""

    def __init__(
        self,
        model: SeqRecommender,
        algorithm: str,
        inner_lr: float,
        algorithm_state: dict[str, torch.Tensor] | None = None,
    ) -> None:
        meta = MetaConfig(algorithm=algorithm, inner_lr=inner_lr, adaptation_steps=0)
        algo = build_algorithm(meta, model.head.size)
        algo.load_state_dict(algorithm_state or {})
        self.learner = MetaLearner(model, algo.to(model.fast_init.device)).eval()
        self.inner_lr = inner_lr

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        scores = self.learner.score(batch, steps)
        if not bool(torch.isfinite(scores).all()):
            raise Diverged(f"test-time adaptation diverged ({steps} steps at inner lr {self.inner_lr})")
        return scores


def model_scorer(
    model: SeqRecommender,
    algorithm: str,
    inner_lr: float,
    algorithm_state: dict[str, torch.Tensor] | None = None,
) -> AdaptingScorer:
    return AdaptingScorer(model, algorithm, inner_lr, algorithm_state)
