"""First-order meta-learning algorithms, batched over all tasks of a meta-batch.

One meta-step (all tasks at once, fast weights ``w [T, P]``)::

    h       = backbone([BOS, support, query])        # once per meta-batch, with grad
    adapted = inner_loop(fast_init, h_support.detach())   # `adaptation_steps` SGD steps, no outer graph
    loss    = query_loss(h_query, fast_init + (adapted - fast_init).detach())
    engine.backward(loss); engine.step()               # the trainer's job, once per meta-step

The straight-through form ``fast_init + (adapted - fast_init).detach()`` has the value of the adapted
weights but the gradient of ``fast_init``: exactly the first-order MAML gradient, for both the backbone
(through ``h_query`` and the score table) and the fast-weight initialisation, from one ordinary backward.
Nothing is edited in place, so DeepSpeed's partitioned parameters stay untouched (ZeRO overwrites
in-place edits at ``step()``).

Meta-SGD (``metasgd``): the inner lr is a learned vector ``lr [P]`` that the algorithm owns, and the adapted
weights are ``fast_init - lr * G`` with ``G`` the (detached) sum of the inner gradients. The same
straight-through trick, ``step + (lr - lr.detach()) * (step / lr).detach()``, gives the query loss the value
of the adapted weights and the first-order gradient ``-G * dL/dw`` for ``lr``.

Each algorithm states its own facts as class attributes (``adapts``, ``options``), so the trainer, the
evaluation and the config checks ask the class instead of comparing names.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from metarec_dist.config import MetaConfig
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.types import MetaBatch


@dataclass
class MetaStepOutput:
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Features:
    """The backbone's output for a meta-batch, split into the support and query positions."""

    support: torch.Tensor  # [T, Kmax, d], detached: the inner loop never backpropagates into the backbone
    query: torch.Tensor  # [T, Q, d], with grad
    context: torch.Tensor  # [T, Kmax + Q, d], with grad: every position that predicts a next item


def encode(model: SeqRecommender, batch: MetaBatch) -> Features:
    h = model.encode(batch.item_ids, batch.attention_mask, batch.user_features)
    k, q = batch.support_len, batch.query_targets.shape[1]
    return Features(support=h[:, :k].detach(), query=h[:, k : k + q], context=h[:, : k + q])


def dense_targets(batch: MetaBatch, horizon: int = 1, exclude_seen: bool = False) -> torch.Tensor:
    """The dense term's targets. ``horizon`` 1 without exclusion: each window position's next item
    ``[T, N]`` (SASRec). Otherwise ``[T, N, horizon]``: position p's next ``horizon`` items p+1..p+h, 0 where
    the window ends or p has no next item (left padding); with ``exclude_seen`` also 0 for an item in the
    prefix p reads or earlier in the same set (the evaluation's relevant set drops both)."""
    nxt = torch.cat([batch.support_targets, batch.query_targets], dim=1)
    if horizon == 1 and not exclude_seen:
        return nxt
    n = nxt.shape[1]
    ahead = torch.nn.functional.pad(nxt, (0, horizon - 1))
    sets = torch.stack([ahead[:, j : j + n] for j in range(horizon)], dim=-1)
    sets = sets * (nxt > 0)[..., None]
    if exclude_seen:
        pos = torch.arange(n, device=nxt.device)
        prefix = batch.item_ids[:, None, None, :n]  # position p reads item_ids[0..p]
        seen = ((sets[..., None] == prefix) & (pos[None, :] <= pos[:, None])[None, :, None, :]).any(-1)
        j = torch.arange(horizon, device=nxt.device)
        repeat = ((sets[..., :, None] == sets[..., None, :]) & (j[None, :] < j[:, None])).any(-1)
        sets = sets.masked_fill(seen | repeat, 0)
    return sets


def next_item_loss(
    model: SeqRecommender,
    context: torch.Tensor,
    batch: MetaBatch,
    horizon: int = 1,
    exclude_seen: bool = False,
) -> torch.Tensor:
    """SASRec's loss: every position of the window (support and query alike) predicts its next item, at
    the un-adapted fast weights; with ``horizon`` h > 1 the set of its next h items from that one state
    (every prefix a support, its continuation the query). Mean over tasks of each task's mean over its
    (position, target) pairs."""
    targets = dense_targets(batch, horizon, exclude_seen)
    fast = model.fast_init.expand(batch.num_tasks, -1)
    return model.task_loss(context, fast, targets, batch.negatives).mean()


def inner_loop(
    model: SeqRecommender,
    h_support: torch.Tensor,
    targets: torch.Tensor,
    start: torch.Tensor,
    steps: int,
    lr: float | torch.Tensor,
    negatives: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``steps`` SGD steps on every task's support loss at once (``lr``: a scalar or one per fast weight).

    The per-task losses are summed before the backward: tasks share no fast weights, so the gradient of the
    sum w.r.t. ``w [T, P]`` is each task's own gradient, row by row. Returns the adapted weights (detached)
    and the per-task support loss before each step.
    """
    table = model.item_table().detach()
    lr = lr.detach() if isinstance(lr, torch.Tensor) else lr
    w = start.detach()
    losses = []
    by_hand = model.cfg.loss == "full" or negatives is None
    for _ in range(steps):
        if by_hand:
            per_task, grad = model.support_loss_and_grad(h_support, w, targets, table)
        else:
            w = w.clone().requires_grad_(True)
            with torch.enable_grad():
                per_task = model.task_loss(h_support, w, targets, negatives, table=table)
                (grad,) = torch.autograd.grad(per_task.sum(), w)
        losses.append(per_task.detach())
        w = (w - lr * grad).detach()
    return w, losses


# Fields of ``meta:`` that only some algorithms act on; any other algorithm rejects a non-default value
# (it would silently ignore it).
ALGORITHM_OPTIONS = ("init_query_weight", "dense_weight", "dense_horizon", "dense_exclude_seen")
DENSE_OPTIONS = frozenset({"dense_weight", "dense_horizon", "dense_exclude_seen"})


def check_dense_shape(meta: MetaConfig) -> None:
    """For an algorithm that weights the dense term: shaping it without weighting it would be ignored."""
    if meta.dense_weight <= 0 and (meta.dense_horizon != 1 or meta.dense_exclude_seen):
        raise ValueError(
            f"meta.dense_horizon / meta.dense_exclude_seen shape the dense term, which is off "
            f"(meta.dense_weight=0) for meta.algorithm={meta.algorithm}; set meta.dense_weight > 0"
        )


class DenseTerm:
    """``meta.dense_weight`` x :func:`next_item_loss` with the configured horizon: the dense term an
    algorithm adds to its own outer loss. Shaping the term without weighting it would be ignored: an error."""

    def __init__(self, meta: MetaConfig) -> None:
        check_dense_shape(meta)
        self.weight, self.horizon, self.exclude_seen = (
            meta.dense_weight,
            meta.dense_horizon,
            meta.dense_exclude_seen,
        )

    def add(
        self, model: SeqRecommender, feats: Features, batch: MetaBatch, loss: torch.Tensor, metrics: dict
    ) -> torch.Tensor:
        if self.weight <= 0:
            return loss
        dense = next_item_loss(model, feats.context, batch, self.horizon, self.exclude_seen)
        metrics["next_item_loss"] = dense.detach()
        return loss + self.weight * dense


class MetaAlgorithm(nn.Module, abc.ABC):
    """An outer loss around the shared inner loop; the vocabulary of learn2learn (``adapt``, ``inner_lr``,
    ``adaptation_steps``). A module, so parameters an algorithm owns (Meta-SGD's rates) are trained,
    checkpointed and exported with the meta-learner that holds it."""

    # Runs the inner loop in training and, by default, at test time (False: trained at ``fast_init``).
    adapts: ClassVar[bool]
    # The ALGORITHM_OPTIONS this algorithm acts on.
    options: ClassVar[frozenset[str]] = frozenset()
    # What it trains without an inner step that moves a weight (``adaptation_steps`` 0 or ``inner_lr`` 0):
    # the algorithm it then is under another name (its own extras, e.g. Meta-SGD's rates, never learn), or
    # None where the algorithm still learns what it is for (``none``, ``sasrec``: no inner loop in training;
    # ``hyperfomaml``: its generated init). See :func:`check_training`.
    without_inner_step: ClassVar[str | None] = None

    def __init__(self, meta: MetaConfig, model: SeqRecommender) -> None:
        """``model``: the recommender this algorithm trains, for the shapes of its own parameters (it is not
        kept: the meta-learner passes the model to every call)."""
        super().__init__()
        self.inner_lr, self.adaptation_steps = meta.inner_lr, meta.adaptation_steps

    def inner_lrs(self) -> float | torch.Tensor:
        """The inner learning rate: a scalar, or one per fast weight (``[P]``)."""
        return self.inner_lrs_at(self.inner_lr)

    def inner_lrs_at(self, inner_lr: float) -> float | torch.Tensor:
        """``inner_lrs`` had the algorithm been built with ``inner_lr``, its own parameters unchanged: what a
        search over inner lrs (``eval/protocol.py``) steps each trajectory with."""
        return inner_lr

    def adapt(
        self,
        model: SeqRecommender,
        h_support: torch.Tensor,
        support_targets: torch.Tensor,
        negatives: torch.Tensor | None = None,
        steps: int | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Fast weights ``[T, P]`` adapted on each task's support, starting from each task's ``task_init``."""
        start = self.task_init(model, h_support, support_targets).detach()
        n = self.adaptation_steps if steps is None else steps
        return inner_loop(model, h_support, support_targets, start, n, self.inner_lrs(), negatives)

    def task_init(
        self, model: SeqRecommender, h_support: torch.Tensor, support_targets: torch.Tensor
    ) -> torch.Tensor:
        """Each task's fast-weight initialisation ``[T, P]``, with its graph: ``model.fast_init`` for every
        task, unless the algorithm generates a per-task one from the support."""
        return model.fast_init.expand(h_support.shape[0], -1)

    @abc.abstractmethod
    def meta_loss(
        self, model: SeqRecommender, batch: MetaBatch, track_adaptation: bool = True
    ) -> MetaStepOutput:
        """The scalar loss whose gradient is this algorithm's outer gradient. ``track_adaptation``: also
        report the support loss after adaptation (one more scoring pass; the trainer asks on logged steps)."""


class InnerLoopAlgorithm(MetaAlgorithm):
    """Adapt on the support, then an outer loss on the query at the adapted weights."""

    adapts = True

    def meta_loss(
        self, model: SeqRecommender, batch: MetaBatch, track_adaptation: bool = True
    ) -> MetaStepOutput:
        feats = encode(model, batch)
        adapted, before = self.adapt(model, feats.support, batch.support_targets, batch.negatives)
        loss, metrics = self.outer_loss(model, feats, batch, adapted)
        if track_adaptation:
            metrics.update(_adaptation_metrics(model, feats, batch, adapted, before))
        return MetaStepOutput(loss=loss, metrics=metrics)

    @abc.abstractmethod
    def outer_loss(
        self, model: SeqRecommender, feats: Features, batch: MetaBatch, adapted: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


def _adaptation_metrics(
    model: SeqRecommender,
    feats: Features,
    batch: MetaBatch,
    adapted: torch.Tensor,
    before: list[torch.Tensor],
) -> dict[str, torch.Tensor]:
    if not before:
        return {}
    with torch.no_grad():
        table = model.item_table().detach()
        after = model.task_loss(feats.support, adapted, batch.support_targets, batch.negatives, table=table)
    first = before[0].mean()
    return {
        "support_loss_before": first,
        "support_loss_after": after.mean(),
        "adaptation_gain": first - after.mean(),
    }


ALGORITHMS: dict[str, type[MetaAlgorithm]] = {}


def register(name: str) -> Callable[[type[MetaAlgorithm]], type[MetaAlgorithm]]:
    def deco(cls: type[MetaAlgorithm]) -> type[MetaAlgorithm]:
        if not isinstance(getattr(cls, "adapts", None), bool):
            raise TypeError(f"algorithm {name!r}: {cls.__name__} must state `adapts` (True or False)")
        ALGORITHMS[name] = cls
        return cls

    return deco


@register("fomaml")
class FOMAML(InnerLoopAlgorithm):
    """First-order MAML, optionally with ``init_query_weight`` x the query loss without adaptation (keeps
    the backbone a good in-context learner on its own, so adaptation starts from ``none``'s level) and
    ``dense_weight`` x SASRec's next-item loss at every position of the window: the query loss alone gives
    the backbone a signal at Q positions per task, the dense term at all K + Q of them."""

    options = frozenset({"init_query_weight"}) | DENSE_OPTIONS
    without_inner_step = "none"

    def __init__(self, meta: MetaConfig, model: SeqRecommender) -> None:
        super().__init__(meta, model)
        self.init_query_weight = meta.init_query_weight
        self.dense = DenseTerm(meta)

    def outer_loss(
        self, model: SeqRecommender, feats: Features, batch: MetaBatch, adapted: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, metrics = self.query_terms(model, feats, batch, adapted)
        return self.dense.add(model, feats, batch, loss, metrics), metrics

    def query_terms(
        self, model: SeqRecommender, feats: Features, batch: MetaBatch, adapted: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The query loss at the adapted weights, first-order gradient to the task's init (``fast_init``)."""
        init = self.task_init(model, feats.support, batch.support_targets)
        fast = init + self.straight_through((adapted - init).detach())
        query = model.task_loss(feats.query, fast, batch.query_targets, batch.negatives).mean()
        metrics = {"query_loss": query.detach()}
        if self.init_query_weight <= 0:
            return query, metrics
        at_init = model.task_loss(feats.query, init, batch.query_targets, batch.negatives).mean()
        metrics["query_loss_at_init"] = at_init.detach()
        return query + self.init_query_weight * at_init, metrics

    def straight_through(self, step: torch.Tensor) -> torch.Tensor:
        """The adaptation step (detached) as the outer loss sees it: here with no gradient of its own."""
        return step


@register("metasgd")
class MetaSGD(FOMAML):
    """Meta-SGD (Li et al., 2017): FOMAML with a learned positive multiplier of ``meta.inner_lr`` for every
    fast weight, so the meta-learner chooses which directions a user's few interactions may move, and how
    far. The rates are this algorithm's parameter (log scale, 0 = the plain scalar ``inner_lr``)."""

    def __init__(self, meta: MetaConfig, model: SeqRecommender) -> None:
        super().__init__(meta, model)
        self.inner_lr_log_scale = nn.Parameter(torch.zeros(model.head.size))

    def inner_lrs_at(self, inner_lr: float) -> torch.Tensor:
        return inner_lr * self.inner_lr_log_scale.exp()

    def straight_through(self, step: torch.Tensor) -> torch.Tensor:
        """``step + (lr - lr.detach()) * step / lr``: the value of ``step`` (the added term is exactly 0) and
        the gradient ``step / lr = -G`` for ``lr``. A rate that is 0 (``inner_lr`` 0, or a learned rate that
        underflowed: ``exp`` of a log scale below about -104 in float32, -17 in fp16) did not move its weight
        (``step`` 0 there) and gets the gradient 0, which is the exact gradient of its log scale
        (``lr * -G``); dividing by it would make the loss NaN."""
        if self.inner_lr <= 0:
            return step
        lr = self.inner_lrs()
        rate = lr.detach()
        per_rate = step / torch.where(rate > 0, rate, torch.ones_like(rate))  # -G; 0 where the rate is 0
        return step + (lr - rate) * per_rate.detach()


@register("reptile")
class Reptile(InnerLoopAlgorithm):
    """Reptile (Nichol et al., 2018) for the fast-weight initialisation, first-order query loss for the rest.

    ``fast_init`` gets the gradient ``fast_init - mean_t(adapted_t)``: one outer SGD step at rate ``eps``
    moves it ``eps`` of the way toward the mean adapted weights, which is Reptile's update (with Adam, as in
    the paper's experiments, the same direction is rescaled per coordinate). The backbone and the item table
    are not in the inner loop, so Reptile has no update of its own for them; they get the query loss at the
    adapted fast weights, as in FOMAML, so the shared features keep learning what adaptation needs.
    """

    without_inner_step = "none"  # and fast_init does not even move: the pull is toward itself

    def outer_loss(
        self, model: SeqRecommender, feats: Features, batch: MetaBatch, adapted: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        query = model.task_loss(feats.query, adapted.detach(), batch.query_targets, batch.negatives).mean()
        target = adapted.mean(0).detach()
        pull = 0.5 * (model.fast_init - target).pow(2).sum()
        return query + pull, {"query_loss": query.detach(), "reptile_distance": pull.detach()}


@register("none")
class NoAdaptation(MetaAlgorithm):
    """The baseline: the same tasks, trained with the query loss at ``fast_init``; the support is only
    context for the backbone. No inner loop (``adaptation_steps`` is ignored in training; evaluation may
    still run it as test-time fine-tuning). ``dense_weight``: plus the dense term, as FOMAML's (the
    ablation that tells the loss's share of a gain from the inner loop's)."""

    adapts = False
    options = DENSE_OPTIONS

    def __init__(self, meta: MetaConfig, model: SeqRecommender) -> None:
        super().__init__(meta, model)
        self.dense = DenseTerm(meta)

    def meta_loss(
        self, model: SeqRecommender, batch: MetaBatch, track_adaptation: bool = True
    ) -> MetaStepOutput:
        feats = encode(model, batch)
        fast = model.fast_init.expand(batch.num_tasks, -1)
        query = model.task_loss(feats.query, fast, batch.query_targets, batch.negatives).mean()
        metrics = {"query_loss": query.detach()}
        return MetaStepOutput(loss=self.dense.add(model, feats, batch, query, metrics), metrics=metrics)


@register("sasrec")
class PlainNextItem(MetaAlgorithm):
    """The SASRec-style baseline: plain next-item loss at every position of the window (support and query
    alike), fast weights at their init, no adaptation. With long windows (``tasks.support_max``) this is
    ordinary sequence-recommender training on whole user histories. ``dense_horizon`` > 1: every position
    predicts its next h items instead (the multi-target ablation of the meta-learners' dense term)."""

    adapts = False
    options = frozenset({"dense_horizon", "dense_exclude_seen"})

    def __init__(self, meta: MetaConfig, model: SeqRecommender) -> None:
        super().__init__(meta, model)
        self.horizon, self.exclude_seen = meta.dense_horizon, meta.dense_exclude_seen

    def meta_loss(
        self, model: SeqRecommender, batch: MetaBatch, track_adaptation: bool = True
    ) -> MetaStepOutput:
        context = encode(model, batch).context
        loss = next_item_loss(model, context, batch, self.horizon, self.exclude_seen)
        return MetaStepOutput(loss=loss, metrics={"next_item_loss": loss.detach()})


def algorithm_class(meta: MetaConfig) -> type[MetaAlgorithm]:
    """The class ``meta.algorithm`` names, after checking that it acts on every option set in ``meta``.
    Cheap (no model): the CLI calls it to fail in the first second, ``build_algorithm`` calls it again."""
    if meta.algorithm not in ALGORITHMS:
        raise ValueError(f"meta.algorithm: unknown {meta.algorithm!r}; choose from {sorted(ALGORITHMS)}")
    cls = ALGORITHMS[meta.algorithm]
    defaults = {f.name: f.default for f in dataclasses.fields(MetaConfig)}
    for key in ALGORITHM_OPTIONS:
        if getattr(meta, key) != defaults[key] and key not in cls.options:
            takers = sorted(n for n, c in ALGORITHMS.items() if key in c.options)
            raise ValueError(
                f"meta.{key}: meta.algorithm={meta.algorithm} does not use this option and would silently "
                f"ignore it; leave it at {defaults[key]} or choose meta.algorithm from {takers}"
            )
    if "dense_weight" in cls.options:
        check_dense_shape(meta)
    return cls


def check_training(meta: MetaConfig, eval_steps: int | None = None) -> type[MetaAlgorithm]:
    """:func:`algorithm_class`, for a training run: also an error where no inner step can move a fast weight
    (``meta.adaptation_steps`` 0 or ``meta.inner_lr`` 0) and the algorithm then trains exactly as another
    one (FOMAML as ``none``: the same loss, the same gradients) while its runs are labelled, compared and
    evaluated as a meta-learner's. Not part of ``build_algorithm``: scoring builds algorithms with 0 steps.
    ``eval_steps`` (``train.eval_steps``): validation inner steps, which an algorithm that does not adapt
    cannot take."""
    cls = algorithm_class(meta)
    if eval_steps and not cls.adapts:
        raise ValueError(
            f"train.eval_steps={eval_steps}: meta.algorithm={meta.algorithm} does not adapt, so its "
            "validation takes no inner step; remove train.eval_steps (or set it to 0)"
        )
    same = cls.without_inner_step
    if same is None or (meta.adaptation_steps > 0 and meta.inner_lr > 0):
        return cls
    key = "adaptation_steps" if meta.adaptation_steps <= 0 else "inner_lr"
    raise ValueError(
        f"meta.{key}=0: meta.algorithm={meta.algorithm} then never moves a fast weight in its inner loop and "
        f"trains as meta.algorithm={same} would; set meta.{key} > 0, or train meta.algorithm={same}"
    )


def build_algorithm(meta: MetaConfig, model: SeqRecommender) -> MetaAlgorithm:
    """The algorithm of the ``meta`` section for ``model`` (its parameters are sized for it)."""
    return algorithm_class(meta)(meta, model)
