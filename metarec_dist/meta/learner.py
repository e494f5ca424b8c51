"""The module a training engine wraps: its ``forward`` is one whole meta-loss (or one scoring pass).

Why the inner loop lives inside ``forward``: under ZeRO-3 a parameter holds its data only while DeepSpeed
has gathered it for a forward pass. Running backbone, inner loop and query loss in one ``forward`` (with the
tied score table and the algorithm's own parameters registered as external parameters by the runtime)
keeps every parameter materialised for exactly as long as the meta-loss needs it. Callers use the named
entry points, ``meta_step`` (training) and ``score`` (evaluation), each with one return type; ``forward``
is only the dispatch the engines route both through.
"""

from __future__ import annotations

import torch
from torch import nn

from metarec_dist.meta.algorithms import MetaAlgorithm, MetaStepOutput
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.types import MetaBatch


class MetaLearner(nn.Module):
    def __init__(self, model: SeqRecommender, algorithm: MetaAlgorithm) -> None:
        super().__init__()
        self.model = model
        self.algorithm = algorithm

    def forward(
        self,
        batch: MetaBatch,
        track_adaptation: bool = True,
        *,
        scoring: bool = False,
        score_steps: int | None = None,
    ) -> MetaStepOutput | torch.Tensor:
        """The engines' single entry point: ``meta_step`` or ``score``, decided by ``scoring``."""
        if scoring:
            return self._scores(batch, score_steps)
        return self.algorithm.meta_loss(self.model, batch, track_adaptation)

    def meta_step(self, batch: MetaBatch, track_adaptation: bool = True) -> MetaStepOutput:
        """The meta-loss of ``batch`` and its metrics (``track_adaptation``: the support loss after
        adaptation too, one more scoring pass)."""
        return self(batch, track_adaptation)

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        """Scores ``[T, V]`` of every item from each task's last support position, after ``steps`` inner
        steps on the support (None: the algorithm's own; 0: at ``fast_init``)."""
        return self(batch, scoring=True, score_steps=steps)

    def external_parameters(self) -> list[nn.Parameter]:
        """Parameters read outside their owning module's ``forward``: the model's (tied score table,
        fast-weight init) and every parameter the algorithm owns. ZeRO-3 must be told about them
        (``register_external_parameter``) or it sees empty tensors."""
        return [*self.model.external_parameters(), *self.algorithm.parameters()]

    def _scores(self, batch: MetaBatch, steps: int | None) -> torch.Tensor:
        k = batch.support_len
        h = self.model.encode(batch.item_ids, batch.attention_mask)
        w, _ = self.algorithm.adapt(self.model, h[:, :k], batch.support_targets, steps=steps)
        return self.model.score_all(h[:, k], w)
