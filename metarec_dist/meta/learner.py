"""The module a training engine wraps: its ``forward`` is one whole meta-loss.

Why the inner loop lives inside ``forward``: under ZeRO-3 a parameter holds its data only while DeepSpeed
has gathered it for a forward pass. Running backbone, inner loop and query loss in one ``forward`` (with the
tied score table registered as an external parameter by the runtime) keeps every parameter materialised for
exactly as long as the meta-loss needs it, and the engine sees an ordinary ``loss = engine(batch)``.
"""

from __future__ import annotations

import torch
from torch import nn

from metarec_dist.meta.algorithms import MetaAlgorithm
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.types import MetaBatch


class MetaLearner(nn.Module):
    def __init__(self, model: SeqRecommender, algorithm: MetaAlgorithm) -> None:
        super().__init__()
        self.model = model
        self.algorithm = algorithm

    def forward(
        self, batch: MetaBatch, score_steps: int | None = None, score: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | torch.Tensor:
        """The meta-loss and its metrics; with ``score=True``, item scores ``[T, V]`` for evaluation
        (adapted with ``score_steps`` inner steps, None = the algorithm's own). Scoring goes through
        ``forward`` too, so ZeRO-3 gathers the parameters for it like for training."""
        if score:
            return self.scores(batch, score_steps)
        out = self.algorithm.meta_loss(self.model, batch)
        return out.loss, out.metrics

    def scores(self, batch: MetaBatch, steps: int | None) -> torch.Tensor:
        """Scores of every item from each task's last support position, after adapting on the support."""
        k = batch.support_len
        h = self.model.encode(batch.item_ids, batch.attention_mask)
        w, _ = self.algorithm.adapt(self.model, h[:, :k], batch.support_targets, steps=steps)
        return self.model.score_all(h[:, k], w)
