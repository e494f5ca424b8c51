"""The module a training engine wraps: its ``forward`` is one whole meta-loss (or one scoring pass).

Why the inner loop lives inside ``forward``: under ZeRO-3 a parameter holds its data only while DeepSpeed
has gathered it for a forward pass. Running backbone, inner loop and query loss in one ``forward`` (with the
tied score table and the algorithm's own parameters registered as external parameters by the runtime)
keeps every parameter materialised for exactly as long as the meta-loss needs it. Callers use the named
entry points, ``meta_step`` (training), ``score`` and ``score_chunks`` (evaluation), each with one return
type; ``forward`` is only the dispatch the engines route them through.

``score_points`` scores several (steps, inner lr) adaptations of one batch in one forward (an adaptation
search, e.g. the trainer's ``train.eval_adaptation: searched``): the batch is encoded once and each lr runs
one trajectory, scored at every step count asked for (:func:`adapted_along`).

``score_chunks`` is the bounded-memory evaluation: one forward adapts every task, then hands a
``score_range(lo, hi)`` over the adapted user state to the caller's sink (e.g. ``ChunkedRanking.run``),
which pulls the item chunks it needs *inside* that forward. So under ZeRO-3 the item table is gathered
once per batch, as for ``score``, the adaptation runs once, and no ``[T, V]`` score matrix exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

from metarec_dist.meta.algorithms import MetaAlgorithm, MetaStepOutput, inner_loop
from metarec_dist.models.recommender import SeqRecommender, UserState
from metarec_dist.tasks.types import MetaBatch

if TYPE_CHECKING:
    from metarec_dist.metrics.ranking import ScoreRange, ScoreSink

# ``sink(i, score_range)``: the scores of point i of a ``score_points`` call (``score_range(lo, hi)`` as for
# a ``ScoreSink``).
PointSink = Callable[[int, "ScoreRange"], None]


def points_by_lr(points: Sequence[tuple[int, float]]) -> dict[float, dict[int, int]]:
    """(steps, inner lr) points grouped into one trajectory per lr: lr -> {steps: the point's index}."""
    out: dict[float, dict[int, int]] = {}
    for i, (steps, lr) in enumerate(points):
        out.setdefault(lr, {})[steps] = i
    return out


def adapted_along(
    model: SeqRecommender,
    algorithm: MetaAlgorithm,
    h: torch.Tensor,
    batch: MetaBatch,
    inner_lr: float,
    steps: Sequence[int],
) -> Iterator[tuple[int, UserState]]:
    """``(s, state)`` for each step count s in ``steps`` (ascending): the user state after s inner steps at
    ``inner_lr`` (the algorithm's rates at that lr), from one trajectory. Step s is the very computation
    ``algorithm.adapt(..., steps=s)`` makes (``inner_loop``'s steps, one at a time, from ``task_init``), so
    each state's scores are those of a scorer built with that lr and asked for s steps. ``h``: the batch's
    encoded sequences."""
    k = batch.support_len
    support, targets = h[:, :k], batch.support_targets
    wanted = set(steps)
    if not wanted:
        return
    w = algorithm.task_init(model, support, targets).detach()
    rates = algorithm.inner_lrs_at(inner_lr)
    for step in range(max(wanted) + 1):
        if step:
            w, _ = inner_loop(model, support, targets, w, 1, rates)
        if step in wanted:
            yield step, model.user_state(h[:, k], w)


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
        score_points: Sequence[tuple[int, float]] | None = None,
        point_sink: PointSink | None = None,
    ) -> MetaStepOutput | torch.Tensor:
        """The engines' single entry point: ``meta_step``, or ``score`` / ``score_chunks`` (``scoring``;
        with a ``score_sink`` the scores go to the sink chunk by chunk), or ``score_points``."""
        if scoring and score_points is not None:
            return self._score_points(batch, score_points, point_sink)
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

    def score_points(self, batch: MetaBatch, points: Sequence[tuple[int, float]], sink: PointSink) -> None:
        """For every (steps, inner lr) point i, ``sink(i, score_range)`` with the scores after that
        adaptation, all inside one forward: under ZeRO-3 one gathering of the parameters per batch."""
        self(batch, scoring=True, score_points=points, point_sink=sink)

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

    def _score_points(
        self, batch: MetaBatch, points: Sequence[tuple[int, float]], sink: PointSink | None
    ) -> torch.Tensor:
        if sink is None:
            raise ValueError("score_points needs a point sink")
        h = self.model.encode(batch.item_ids, batch.attention_mask, batch.user_features)
        for lr, wanted in points_by_lr(points).items():
            for step, state in adapted_along(self.model, self.algorithm, h, batch, lr, sorted(wanted)):
                sink(wanted[step], partial(self.model.score_range, state))
        return h[:, batch.support_len]  # a tensor, so the engines' output hooks have something to walk
