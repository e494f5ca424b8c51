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

    def forward(self, batch: MetaBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.algorithm.meta_loss(self.model, batch)
        return out.loss, out.metrics
