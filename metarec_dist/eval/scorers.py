"""Scorers for :func:`metarec_dist.train.evaluation.evaluate_cold_start`: anything called as
``scorer(batch, score_steps=n, score=True) -> [U, V]`` is evaluated by the same harness, so baselines and
meta-learned models share the users, the support masking and the metrics."""

from __future__ import annotations

import numpy as np
import torch

from metarec_dist.meta import MetaLearner, build_algorithm
from metarec_dist.metrics.popularity import popularity_scores
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.types import MetaBatch


class PopularityScorer:
    """Most-popular items, counted over TRAINING users only; the same list for every user."""

    def __init__(self, train_sequences: list[np.ndarray], num_items: int) -> None:
        self.scores = popularity_scores(train_sequences, num_items)[1:]  # column j = item j + 1

    def __call__(self, batch: MetaBatch, score_steps: int | None = None, score: bool = False) -> torch.Tensor:
        return self.scores.expand(batch.num_tasks, -1)


class Diverged(ValueError):
    """Test-time adaptation produced non-finite scores (an inner lr too large for the steps)."""


class AdaptingScorer:
    """The meta-learner in eval mode; the number of adaptation steps comes per call (``score_steps``).
    ``none``/``sasrec`` adapt too when asked (steps > 0): test-time fine-tuning of the same fast weights with
    the same inner loop. Non-finite scores raise :class:`Diverged` instead of reaching the metrics, where a
    NaN row would tie every item and win the optimistic tie-break."""

    def __init__(self, model: SeqRecommender, algorithm: str, inner_lr: float) -> None:
        self.learner = MetaLearner(model, build_algorithm(algorithm, inner_lr, 0)).eval()
        self.inner_lr = inner_lr

    def __call__(self, batch: MetaBatch, score_steps: int | None = None, score: bool = False) -> torch.Tensor:
        scores = self.learner(batch, score_steps=score_steps, score=True)
        if not bool(torch.isfinite(scores).all()):
            raise Diverged(f"test-time adaptation diverged ({score_steps} steps at inner lr {self.inner_lr})")
        return scores


def model_scorer(model: SeqRecommender, algorithm: str, inner_lr: float) -> AdaptingScorer:
    return AdaptingScorer(model, algorithm, inner_lr)
