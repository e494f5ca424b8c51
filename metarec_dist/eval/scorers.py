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


def model_scorer(model: SeqRecommender, algorithm: str, inner_lr: float) -> MetaLearner:
    """The meta-learner in eval mode; the number of adaptation steps is passed per call (``score_steps``).
    ``none``/``sasrec`` adapt too when asked (steps > 0): that is test-time fine-tuning of the same fast
    weights with the same inner loop."""
    return MetaLearner(model, build_algorithm(algorithm, inner_lr, 0)).eval()
