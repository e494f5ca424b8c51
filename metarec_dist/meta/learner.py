"""The module a training engine wraps: its ``forward`` is one whole meta-loss (or one scoring pass).

Why the inner loop lives inside ``forward``: under ZeRO-3 a parameter holds its data only while DeepSpeed
has gathered it for a forward pass. Running backbone, inner loop and query loss in one ``forward`` (with the
tied score table and the algorithm's own parameters registered as external parameters by the runtime)
keeps every parameter materialised for exactly as long as the meta-loss needs it. Callers use the named
entry points, ``meta_step`` (training), ``score`` and ``score_chunks`` (evaluation), each with one return
type; ``forward`` is only the dispatch the engines route them through.

``score_chunks`` is the bounded-memory evaluation: one forward adapts every task, then hands a
``score_range(lo, hi)`` over the adapted user state to the caller's sink (e.g. ``ChunkedRanking.run``),
which pulls the item chunks it needs *inside* that forward. So under ZeRO-3 the item table is gathered
once per batch, as for ``score``, the adaptation runs once, and no ``[T, V]`` score matrix exists.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

from metarec_dist.meta.algorithms import MetaAlgorithm, MetaStepOutput
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.types import MetaBatch

if TYPE_CHECKING:
    from metarec_dist.metrics.ranking import ScoreSink


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
        score_sink: ScoreSink | None = None,
    ) -> MetaStepOutput | torch.Tensor:
        """The engines' single entry point: ``meta_step``, or ``score`` / ``score_chunks`` (``scoring``;
        with a ``score_sink`` the scores go to the sink chunk by chunk)."""
        if scoring:
            return self._scores(batch, score_steps, score_sink)
        return self.algorithm.meta_loss(self.model, batch, track_adaptation)

    def meta_step(self, batch: MetaBatch, track_adaptation: bool = True) -> MetaStepOutput:
        """The meta-loss of ``batch`` and its metrics (``track_adaptation``: the support loss after
        adaptation too, one more scoring pass)."""
        return self(batch, track_adaptation)

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        """Scores ``[T, V]`` of every item from each task's last support position, after ``steps`` inner
        steps on the support (None: the algorithm's own; 0: at ``fast_init``)."""
        return self(batch, scoring=True, score_steps=steps)

    def score_chunks(self, batch: MetaBatch, steps: int | None, sink: ScoreSink) -> None:
        """Like ``score``, but calls ``sink(score_range)`` once, inside the forward: ``score_range(lo, hi)``
        gives the scores ``[T, hi - lo]`` of item columns ``lo..hi-1``."""
        self(batch, scoring=True, score_steps=steps, score_sink=sink)

    def external_parameters(self) -> list[nn.Parameter]:
        """Parameters read outside their owning module's ``forward``: the model's (tied score table,
        fast-weight init) and every parameter the algorithm owns. ZeRO-3 must be told about them
        (``register_external_parameter``) or it sees empty tensors."""
        return [*self.model.external_parameters(), *self.algorithm.parameters()]

    def _scores(self, batch: MetaBatch, steps: int | None, sink: ScoreSink | None) -> torch.Tensor:
        k = batch.support_len
        h = self.model.encode(batch.item_ids, batch.attention_mask, batch.user_features)
        w, _ = self.algorithm.adapt(self.model, h[:, :k], batch.support_targets, steps=steps)
        if sink is None:
            return self.model.score_all(h[:, k], w)
        state = self.model.user_state(h[:, k], w)
        sink(partial(self.model.score_range, state))
        return state.hidden  # a tensor, so the engines' output hooks have something to walk
