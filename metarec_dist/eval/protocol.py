"""The cold-start protocol: which users, which shot counts, how each method adapts, and its per-user result.

The methods of the comparison: ``popularity`` (training users' counts), ``cooccurrence`` (which items
training users had next after each support item: ``metrics/cooccurrence.py``), and every trained model under
its algorithm's test-time protocol:

- ``fomaml`` / ``reptile``: adapt the fast weights on the support; steps and inner lr tuned on validation.
- ``none`` / ``sasrec``: no adaptation (steps = 0), or with ``finetune`` the same inner loop run as
  test-time fine-tuning, its steps and lr tuned on validation (steps = 0 stays a candidate).

Adaptation settings are chosen on VALIDATION users only. The trained values are always in the grid, and so
is "no adaptation" (steps = 0): if adapting hurts on validation users it is switched off rather than
reported. By default one setting for all shot counts (``eval.adaptation: shared``): averaging the selection
criterion over K uses every validation user once per K, which matters with ~100 of them. With thousands
(``eval.adaptation: per_shot``) each K gets the setting that is best for that K alone: a user with one
interaction may want fewer steps than one with ten.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metarec_dist.config import EvalConfig, MetaConfig
from metarec_dist.data.split import UserSplits
from metarec_dist.eval.cold_start import (
    ColdStartBatches,
    Diverged,
    PerUser,
    RankedBatches,
    Scorer,
    SettingSink,
    StateMemo,
)
from metarec_dist.eval.device import check_workers
from metarec_dist.eval.distributed import BatchRunner, UserBatches, run_batches, run_settings, runner_for
from metarec_dist.eval.loo import LOO, LOO_KS, LooBatches
from metarec_dist.eval.stats import MethodResult
from metarec_dist.meta import ALGORITHMS, MetaLearner, build_algorithm
from metarec_dist.meta.algorithms import MetaAlgorithm
from metarec_dist.meta.learner import adapted_along, points_by_lr
from metarec_dist.metrics.cooccurrence import ItemCooccurrence
from metarec_dist.metrics.popularity import popularity_scores
from metarec_dist.metrics.ranking import ScoreRange, ScoreSink
from metarec_dist.models.recommender import SeqRecommender, UserState
from metarec_dist.tasks.types import MetaBatch

if TYPE_CHECKING:
    from metarec_dist.eval.loading import LoadedModel

STEP_GRID = (0, 1, 3, 5, 10)
LR_FACTORS = (0.25, 0.5, 1.0, 2.0)
FINETUNE_LRS = (0.05, 0.1, 0.2, 0.5, 1.0)  # `none`/`sasrec` were never trained to adapt: no trained lr
CRITERION = "ndcg@10"
COOCCURRENCE = "cooccurrence"  # the count baseline's name in every table
# The co-occurrence baseline's weight per step back in the support (chosen on Amazon Sports' validation
# users among 1, 0.7, 0.5, 0.3, 0.2, 0.1: docs/results/amazon-sports.md, "Co-occurrence").
COOC_RECENCY = 0.3
# Fusion with it (``metarec evaluate --fuse``; reproduce ``--fuse NAME``, reported as NAME+cooc): the model's
# log-probabilities plus weight x log(co-occurrence + FUSION_EPS), the weight chosen on validation users
# after the adaptation (0 stays a candidate: the plain model, if the counts do not help).
FUSION_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)
FUSION_EPS = 1e-4
FUSED = "+cooc"


class PopularityScorer:
    """Most-popular items, counted over TRAINING users only; the same list for every user."""

    def __init__(self, train_sequences: list[np.ndarray], num_items: int) -> None:
        self.scores = popularity_scores(train_sequences, num_items)[1:]  # column j = item j + 1

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        return self.scores.expand(batch.num_tasks, -1)


class CooccurrenceScorer:
    """Item co-occurrence counted over TRAINING users only (``metrics/cooccurrence.py``): each user's
    scores from their support items, the most recent weighted most."""

    def __init__(self, model: ItemCooccurrence) -> None:
        self.model = model

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        return self.model.scores(batch.support_targets)


class FusedScorer:
    """A model's scores fused with the co-occurrence counts of the user's support: ``log_softmax(model) +
    weight * log(weighted counts + FUSION_EPS)``, a product of the two distributions (the counts smoothed so
    an item no support item ever led to is penalised, not excluded). Weight 0 is the model unchanged."""

    def __init__(self, base: AdaptingScorer, cooc: ItemCooccurrence, weight: float) -> None:
        self.base, self.cooc, self.weight = base, cooc, weight

    def score(self, batch: MetaBatch, steps: int) -> torch.Tensor:
        scores = self.base.score(batch, steps)
        if not self.weight:
            return scores
        prior = self.cooc.weighted(batch.support_targets).to(scores.device, torch.float32)
        return torch.log_softmax(scores.float(), -1) + self.weight * torch.log(prior + FUSION_EPS)


class AdaptingScorer:
    """The meta-learner in eval mode; the number of adaptation steps comes per call. ``none``/``sasrec``
    adapt too when asked (steps > 0): test-time fine-tuning of the same fast weights with the same inner
    loop. Non-finite scores raise :class:`Diverged` instead of reaching the metrics, where a NaN row would
    tie every item and win the optimistic tie-break. ``algorithm_state``: the trained algorithm's own
    parameters (Meta-SGD's rates).

    ``steps`` is required, an int: this scorer has no adaptation of its own (it is built with none), so the
    ``None`` the ``Scorer`` protocol allows ("the algorithm's own", the training engine's trained steps) is
    refused rather than read as 0 steps, which ``MetaLearner.score`` would read as the algorithm's.

    ``memo``: adapted states kept for a later call on the same users at the same adaptation (the
    protocol's; see :class:`StateMemo`). None (the default, as recommend and serve build it): none kept."""

    def __init__(
        self,
        model: SeqRecommender,
        algorithm: str,
        inner_lr: float,
        algorithm_state: dict[str, torch.Tensor] | None = None,
        memo: StateMemo | None = None,
    ) -> None:
        meta = MetaConfig(algorithm=algorithm, inner_lr=inner_lr, adaptation_steps=0)
        algo = build_algorithm(meta, model)
        algo.load_state_dict(algorithm_state or {})
        self.learner = MetaLearner(model, algo.to(model.fast_init.device)).eval()
        self.inner_lr, self.memo = inner_lr, memo

    def score(self, batch: MetaBatch, steps: int) -> torch.Tensor:
        if self.memo is not None and self.steps_along:
            model = self.learner.model
            scores = model.score_range(self.state(batch, explicit_steps(steps)), 0, model.num_items)
        else:
            scores = self.learner.score(batch, explicit_steps(steps))
        if not bool(torch.isfinite(scores).all()):
            raise Diverged(f"test-time adaptation diverged ({steps} steps at inner lr {self.inner_lr})")
        return scores

    def score_chunks(self, batch: MetaBatch, steps: int, sink: ScoreSink) -> None:
        """``score`` chunk by chunk (bounded memory), with the same divergence check on every chunk."""
        if self.memo is not None and self.steps_along:
            state = self.state(batch, explicit_steps(steps))
            sink(self.checked(partial(self.learner.model.score_range, state), steps))
            return
        self.learner.score_chunks(
            batch, explicit_steps(steps), lambda score_range: sink(self.checked(score_range, steps))
        )

    def memo_key(self, batch: MetaBatch, steps: int) -> bytes:
        """This scorer's key in a :class:`StateMemo` for ``batch`` after ``steps``."""
        algorithm = self.learner.algorithm
        setting = (type(algorithm).__qualname__, self.inner_lr, *algorithm.state_dict().values())
        return StateMemo.key(self.learner.model, setting, batch, steps)

    def state(self, batch: MetaBatch, steps: int) -> UserState:
        """What scoring ``batch`` after ``steps`` needs (``MetaLearner._scores``'s computation, step for
        step), from the memo when it holds it."""
        model = self.learner.model
        key = self.memo_key(batch, steps) if self.memo is not None else None
        if key is not None and (kept := self.memo.get(model, key)) is not None:
            return kept
        k = batch.support_len
        h = model.encode(batch.item_ids, batch.attention_mask, batch.user_features)
        w, _ = self.learner.algorithm.adapt(model, h[:, :k], batch.support_targets, steps=steps)
        state = model.user_state(h[:, k], w)
        if key is not None:
            self.memo.put(model, key, state)
        return state

    def checked(self, score_range: ScoreRange, steps: int) -> ScoreRange:
        """``score_range`` raising :class:`Diverged` on a chunk with a non-finite score."""
        return checked(score_range, steps, self.inner_lr)

    @property
    def steps_along(self) -> bool:
        """Whether :class:`GridScorer` can score this scorer's steps along one trajectory: the learner scores
        and the algorithm adapts as ``MetaLearner._scores`` / ``MetaAlgorithm.adapt`` do (every algorithm
        here; a subclass that changes either is scored point by point)."""
        learner = self.learner
        return (
            type(learner)._scores is MetaLearner._scores
            and type(learner.algorithm).adapt is MetaAlgorithm.adapt
        )


def checked(score_range: ScoreRange, steps: int, inner_lr: float) -> ScoreRange:
    """``score_range`` raising :class:`Diverged` on a chunk with a non-finite score (adapted ``steps`` steps
    at ``inner_lr``)."""

    def read(lo: int, hi: int) -> torch.Tensor:
        scores = score_range(lo, hi)
        if not bool(torch.isfinite(scores).all()):
            raise Diverged(f"test-time adaptation diverged ({steps} steps at inner lr {inner_lr})")
        return scores

    return read


def raising(exc: Exception) -> ScoreRange:
    """A ``score_range`` that raises ``exc`` (a setting whose scores diverged)."""

    def read(lo: int, hi: int) -> torch.Tensor:
        raise exc

    return read


class GridScorer:
    """Every (steps, inner lr) point of an adaptation grid on one batch (a ``SettingsScorer``): the batch is
    encoded once and each lr runs one trajectory, its fast weights scored after each step count the grid
    asks for. Step s of lr's trajectory is the very computation ``AdaptingScorer(lr).score(batch, s)``
    makes (``inner_loop``'s steps, one at a time, from ``task_init``), so each point's scores, and its
    metrics, are that scorer's exactly; a diverged point raises :class:`Diverged` on its own. The grid of
    ``tune`` re-encoded the batch for every point and re-ran steps 1..s for every s."""

    def __init__(self, scorers: dict[float, AdaptingScorer], points: Sequence[tuple[int, float]]) -> None:
        self.scorers, self.points = scorers, list(points)
        self.num_settings = len(self.points)

    def score_settings(self, batch: MetaBatch, sink: SettingSink) -> None:
        model = next(iter(self.scorers.values())).learner.model
        h = model.encode(batch.item_ids, batch.attention_mask, batch.user_features)
        trajectories = points_by_lr(self.points)
        for lr, scorer in self.scorers.items():
            wanted = trajectories.get(lr, {})
            for step, state in adapted_along(model, scorer.learner.algorithm, h, batch, lr, sorted(wanted)):
                if scorer.memo is not None:  # the fusion weight is chosen at one of these points
                    scorer.memo.put(model, scorer.memo_key(batch, step), state)
                sink(wanted[step], scorer.checked(partial(model.score_range, state), step))


class EngineGrid:
    """An adaptation grid scored through a training engine (a ``SettingsScorer``): the trainer's searched
    validation (``train.eval_adaptation: searched``). Point (s, lr) scores as ``engine.score(batch, s)``
    would had the algorithm been trained at inner lr ``lr`` (its own parameters, e.g. Meta-SGD's rates,
    unchanged), which is what ``AdaptingScorer(lr)`` scores an exported model with. Each batch is one
    forward of the engine (``score_points``): under ZeRO-3 one collective, as ``score`` is."""

    def __init__(self, engine: Any, points: Sequence[tuple[int, float]]) -> None:
        self.engine, self.points = engine, list(points)
        self.num_settings = len(self.points)

    def score_settings(self, batch: MetaBatch, sink: SettingSink) -> None:
        def each(i: int, score_range: ScoreRange) -> None:
            steps, lr = self.points[i]
            sink(i, checked(score_range, steps, lr))

        self.engine.score_points(batch, self.points, each)


class FusionWeights:
    """One adaptation's scores fused at each of several weights (a ``SettingsScorer``): the model adapts
    and scores once, and the log-softmax and the co-occurrence prior are computed once per batch; weight w
    gives ``FusedScorer(base, cooc, w)``'s scores exactly (the same operations on the same tensors)."""

    def __init__(
        self, base: AdaptingScorer, steps: int, cooc: ItemCooccurrence, weights: Sequence[float]
    ) -> None:
        self.base, self.steps, self.cooc, self.weights = base, steps, cooc, list(weights)
        self.num_settings = len(self.weights)

    def score_settings(self, batch: MetaBatch, sink: SettingSink) -> None:
        try:
            scores = self.base.score(batch, self.steps)
        except Diverged as exc:
            for i in range(self.num_settings):
                sink(i, raising(exc))
            return
        log_probs = log_prior = None
        for i, weight in enumerate(self.weights):
            if not weight:
                sink(i, lambda lo, hi: scores[:, lo:hi])
                continue
            if log_probs is None:
                prior = self.cooc.weighted(batch.support_targets).to(scores.device, torch.float32)
                log_probs = torch.log_softmax(scores.float(), -1)
                log_prior = torch.log(prior + FUSION_EPS)
            fused = log_probs + weight * log_prior
            sink(i, lambda lo, hi, fused=fused: fused[:, lo:hi])


def explicit_steps(steps: int) -> int:
    """``steps`` if it is a step count (>= 0), else a ``TypeError`` / ``ValueError``: ``AdaptingScorer`` has
    no adaptation of its own for a ``None`` to stand for."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(
            f"AdaptingScorer needs the adaptation steps as an int (0: no adaptation), got {steps!r}"
        )
    if steps < 0:
        raise ValueError(f"adaptation steps must be >= 0, got {steps}")
    return steps


@dataclass
class Adaptation:
    steps: int
    inner_lr: float
    val_score: float | None = None  # mean validation NDCG@10 over the shot counts
    grid_size: int = 1
    selected_on: str = "fixed"  # "valid" when searched on validation users
    # eval.adaptation = per_shot: K -> (steps, inner_lr, that K's validation score); ``steps`` / ``inner_lr``
    # above are then the shared choice, kept for reference, and ``val_score`` the mean of the per-K scores.
    per_shot: dict[int, tuple[int, float, float]] | None = None
    # Fused with the co-occurrence counts (``FusedScorer``): the weight, and each candidate's validation
    # score (``val_score`` is then the chosen weight's); None: not fused.
    fusion: float | None = None
    fusion_scores: dict[float, float] | None = None
    # Where the weight comes from: "valid" (the best candidate on validation users) or "export" (a fused
    # export's stored weight, what recommend/serve apply); ``fusion_best``: the best candidate either way.
    fusion_from: str = "valid"
    fusion_best: float | None = None
    # How many validation users the choice was made on (eval.tune_users of them, or all); None: no search.
    valid_users: int | None = None

    def setting(self, shot: int) -> tuple[int, float]:
        """The (steps, inner_lr) used for support size ``shot``."""
        if self.per_shot is None:
            return self.steps, self.inner_lr
        steps, lr, _ = self.per_shot[shot]
        return steps, lr

    def groups(self, shots: Sequence[int]) -> dict[tuple[int, float], list[int]]:
        """The shot counts that share a setting, so each setting scores the users once."""
        out: dict[tuple[int, float], list[int]] = {}
        for k in shots:
            out.setdefault(self.setting(k), []).append(k)
        return out

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "steps": self.steps,
            "inner_lr": self.inner_lr,
            f"val_{CRITERION}": self.val_score,
            "grid_size": self.grid_size,
            "selected_on": self.selected_on,
        }
        if self.valid_users is not None:
            out["valid_users"] = self.valid_users
        if self.per_shot is not None:
            out["per_shot"] = {
                str(k): {"steps": s, "inner_lr": lr, f"val_{CRITERION}": v}
                for k, (s, lr, v) in sorted(self.per_shot.items())
            }
        if self.fusion is not None:
            out["fusion"] = {
                "weight": self.fusion,
                "eps": FUSION_EPS,
                "recency": COOC_RECENCY,
                f"val_{CRITERION}": {str(w): v for w, v in sorted((self.fusion_scores or {}).items())},
            }
            if self.fusion_from == "export":  # absent for a run folder's choice: its JSON is unchanged
                out["fusion"]["selected_on"] = "export"
                out["fusion"]["valid_best"] = self.fusion_best
        return out


def _best(candidates: dict[tuple[int, float], Any], score: Callable[[tuple[int, float]], float]) -> tuple:
    """The candidate with the highest score; candidates come in (steps, lr) order and a later one must win
    by more than float noise, so ties go to fewer steps, then the lower lr."""
    best = None
    for c in candidates:
        if best is None or score(c) > score(best) + 1e-12:
            best = c
    return best


def best_per_shot(
    points: Sequence[tuple[int, float]], results: Sequence[PerUser | None]
) -> tuple[PerUser, dict[int, tuple[int, float]]]:
    """Each shot count's per-user results at the grid point with its best mean NDCG@10, and that point
    (ties: the earlier point, so fewer steps, then the lower lr, for a grid in ``adaptation_grid``'s order).
    A point whose results are None (diverged) is no candidate; a shot count no user has is left out."""
    found = {point: res for point, res in zip(points, results, strict=True) if res is not None}
    if not found:
        raise ValueError("every adaptation setting gives non-finite scores: the model itself is broken (NaN)")
    chosen: PerUser = {}
    where: dict[int, tuple[int, float]] = {}
    for k in next(iter(found.values())):
        have = {point: res[k] for point, res in found.items() if len(res[k].get(CRITERION, ()))}
        if have:
            where[k] = _best(have, lambda point, have=have: float(have[point][CRITERION].mean()))
            chosen[k] = have[where[k]]
    return chosen, where


def adaptation_grid(trained_steps: int, trained_lr: float, finetune: bool) -> list[tuple[int, float]]:
    """(steps, inner_lr) candidates; steps = 0 appears once (the lr is irrelevant without a step)."""
    lrs = FINETUNE_LRS if finetune else sorted({round(trained_lr * f, 6) for f in LR_FACTORS} | {trained_lr})
    steps = sorted(set(STEP_GRID) | ({trained_steps} if not finetune else set()))
    return [(0, trained_lr)] + [(s, lr) for s in steps if s > 0 for lr in lrs]


def method_name(algorithm: str, finetune: bool, label: str | None = None, fuse: bool = False) -> str:
    """The name results are reported under: ``label`` (default: the algorithm's name), with "+finetune"
    when an algorithm trained without an inner loop (which does not adapt by default) was fine-tuned, and
    "+cooc" when fused with the co-occurrence counts."""
    name = algorithm if label is None else label
    name = f"{name}+finetune" if finetune and not ALGORITHMS[algorithm].adapts else name
    return f"{name}{FUSED}" if fuse else name


@dataclass
class ColdStartProtocol:
    """One evaluation setting shared by ``metarec evaluate``, the reproduction script and the trainer's
    periodic validation: the user groups, the shot counts, the longest support and the ``eval:`` section."""

    splits: UserSplits
    shots: Sequence[int]
    support_max: int
    eval_cfg: EvalConfig
    # Where the model scores (``eval/device.py``): the batches are built there and ``scorer`` moves the model
    # there. The metrics come back to the CPU. Keyword-only: the subclasses' own fields come after it.
    device: torch.device | str = field(default="cpu", kw_only=True)
    # The adapted states its scorers keep for a later pass over the same users at the same adaptation
    # (``StateMemo``); None: none kept (every pass encodes and adapts).
    memo: StateMemo | None = field(default_factory=StateMemo, kw_only=True, repr=False, compare=False)

    # What the two evaluated splits are, and what an empty one means: the subclass says its own.
    split_hint = "training users are not cold-start"

    def empty_split(self, split: str) -> str:
        return "no users to evaluate in this split"

    def users(self, split: str) -> list[np.ndarray]:
        if split not in ("valid", "test"):
            raise ValueError(f"--split must be valid or test ({self.split_hint}), got {split!r}")
        users = getattr(self.splits, split)
        if not users:
            raise ValueError(self.empty_split(split))
        return users

    def per_user(
        self,
        scorer: Scorer,
        sequences: list[np.ndarray],
        steps: int | None = 0,
        ks: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        user_features: np.ndarray | None = None,
        runner: BatchRunner | None = None,
    ) -> PerUser:
        """The protocol's per-user metrics of ``scorer`` on ``sequences`` after ``steps`` adaptation steps.
        ``user_features``: the users' feature ids, row i for ``sequences[i]`` (``UserSplits.user_features``).
        ``device``: where the batches go (None: the protocol's ``device``; the trainer passes its rank's).
        The batches run on ``runner``: by default here (``eval.workers: 1``) or on ``eval.workers`` Ray
        actors (on the CPU only: they have no GPU); the trainer passes its ranks. The numbers do not depend
        on where (``eval/distributed.py``)."""
        device = self.device if device is None else device
        runner = self.runner(device) if runner is None else runner
        return run_batches(self.batches(sequences, ks, device, user_features), scorer, steps, runner)

    def runner(self, device: torch.device | str) -> BatchRunner:
        """Where the batches run by default: here (``eval.workers: 1``) or on Ray actors."""
        check_workers(torch.device(device), self.eval_cfg.workers, "eval.workers", "set eval.workers=1")
        return runner_for(self.eval_cfg.workers)

    def per_setting(
        self,
        scorer: GridScorer | FusionWeights | EngineGrid,
        users: list[np.ndarray],
        user_features: np.ndarray | None,
        *,
        ks: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        runner: BatchRunner | None = None,
    ) -> list[PerUser | None] | None:
        """``scorer``'s settings on ``users`` in one pass over the batches, each one's per-user results (None:
        diverged), as ``per_user`` gives them setting by setting; None where this protocol has no such pass
        (its batches do not score through ``RankedBatches``, or it scores users its own way). The
        cold-start, leave-one-out and item protocols' batches all do. ``ks``, ``device``, ``runner``: as for
        ``per_user``."""
        if type(self).per_user is not ColdStartProtocol.per_user:
            return None
        device = self.device if device is None else device
        batches = self.batches(users, ks, device, user_features)
        if not isinstance(batches, RankedBatches) or type(batches).run is not RankedBatches.run:
            return None
        return run_settings(batches, scorer, self.runner(device) if runner is None else runner)

    def batches(
        self,
        sequences: list[np.ndarray],
        ks: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        user_features: np.ndarray | None = None,
    ) -> UserBatches:
        """Full-ranking cold-start metrics per user: adapt on the first K items, rank all items but the
        support, score against the next ``eval.num_relevant`` interactions (on ``device``, None: the
        protocol's)."""
        options = self.shot_batch_options(ks, device, user_features)
        return ColdStartBatches.build(self.splits.num_items, sequences, **options)

    def shot_batch_options(
        self, ks: Sequence[int] | None, device: torch.device | str | None, user_features: np.ndarray | None
    ) -> dict[str, Any]:
        """The keyword arguments of a shot-count protocol's batches (``ColdStartBatches.build``, the item
        protocols' ``NewItemBatches.build``), from this protocol and its ``eval:`` section: written once so
        the cold-start and item protocols cannot come to build their batches differently. ``ks``, ``device``:
        None for the protocol's."""
        return {
            "shots": list(self.shots),
            "support_max": self.longest,
            "num_relevant": self.eval_cfg.num_relevant,
            "ks": tuple(self.eval_cfg.ks if ks is None else ks),
            **self.batch_options(device, user_features),
        }

    def batch_options(
        self, device: torch.device | str | None, user_features: np.ndarray | None
    ) -> dict[str, Any]:
        """The keyword arguments every protocol's batches take alike (cold-start, item, leave-one-out): the
        users per batch and the items per ranking chunk (``eval:``), where they score (None: the
        protocol's device) and the users' features."""
        return {
            "batch_users": self.eval_cfg.batch_users,
            "device": self.device if device is None else device,
            "item_chunk": self.eval_cfg.item_chunk,
            "user_features": user_features,
        }

    def choose_adaptation(
        self, loaded: LoadedModel, finetune: bool = False, fixed: tuple[int, float] | None = None
    ) -> Adaptation:
        """``fixed`` (steps, lr) skips the search; otherwise the grid around the trained ``meta:`` settings
        for this algorithm, on validation users."""
        if fixed is not None:
            return Adaptation(*fixed)
        meta = loaded.cfg.meta
        adapts = ALGORITHMS[meta.algorithm].adapts
        if not adapts and not finetune:
            return Adaptation(0, meta.inner_lr)
        return self.tune(loaded, adaptation_grid(meta.adaptation_steps, meta.inner_lr, finetune=not adapts))

    def tune(self, loaded: LoadedModel, grid: list[tuple[int, float]]) -> Adaptation:
        """The grid point with the best mean validation NDCG@10 over the shots (ties: fewer steps, lower
        lr); with ``eval.adaptation: per_shot`` also each shot count's best point by its own NDCG@10."""
        if not self.splits.valid:
            raise ValueError(
                "no validation users to choose the adaptation steps/lr on (data.valid_frac is 0?); "
                "fix them with --steps N --inner-lr LR"
            )
        scores: dict[tuple[int, float], dict[int, float]] = {}
        users = self.tune_users()
        for (steps, lr), res in self.grid_results(loaded, sorted(grid), users).items():
            if res is None:  # too large an inner lr for this many steps: not a candidate
                continue
            # A shot count no validation user has enough history for (eval.shots 10 on short sequences)
            # has no metrics: it neither votes nor gets a per-shot choice (was a KeyError traceback).
            scores[steps, lr] = {k: float(res[k][CRITERION].mean()) for k in self.shots if res.get(k)}
            if not scores[steps, lr]:
                raise ValueError(
                    f"no validation user has enough interactions for any of the shot counts {self.shots} "
                    "to choose the adaptation on; fix it with --steps N --inner-lr LR, or use smaller shots"
                )
        if not scores:
            raise ValueError(
                "every adaptation setting gives non-finite scores: the model itself is broken (NaN)"
            )
        steps, lr = _best(scores, lambda s: float(np.mean(list(scores[s].values()))))
        best = Adaptation(steps, lr, float(np.mean(list(scores[steps, lr].values()))), len(grid), "valid")
        best.valid_users = len(users)
        if self.eval_cfg.adaptation == "per_shot":
            shots = [k for k in self.shots if all(k in v for v in scores.values())]
            per_k = {k: _best(scores, lambda s, k=k: scores[s][k]) for k in shots}
            best.per_shot = {k: (*point, scores[point][k]) for k, point in per_k.items()}
            best.val_score = float(np.mean([v for _, _, v in best.per_shot.values()]))
        return best

    def grid_results(
        self, loaded: LoadedModel, points: list[tuple[int, float]], users: list[np.ndarray]
    ) -> dict[tuple[int, float], PerUser | None]:
        """Each grid point's per-user results on ``users`` (the tuning ones; None: it diverged), from one
        pass of :class:`GridScorer` where it applies, else point by point."""
        feats = self.tune_user_features()
        scorers = {lr: self.scorer(loaded, lr) for lr in dict.fromkeys(lr for _, lr in points)}
        if all(isinstance(s, AdaptingScorer) and s.steps_along for s in scorers.values()):
            shared = self.per_setting(GridScorer(scorers, points), users, feats)
            if shared is not None:
                return dict(zip(points, shared, strict=True))
        out: dict[tuple[int, float], PerUser | None] = {}
        for steps, lr in points:
            try:
                out[steps, lr] = self.per_user(scorers[lr], users, steps, user_features=feats)
            except Diverged:
                out[steps, lr] = None
        return out

    def tune_index(self) -> np.ndarray | None:
        """Positions in the validation split of the users the adaptation grid runs on: None for all, or
        ``eval.tune_users`` of them drawn with a fixed seed (in split order), the same for every method and
        training seed."""
        n, total = self.eval_cfg.tune_users, len(self.splits.valid)
        if n == 0 or n >= total:
            return None
        return np.sort(np.random.default_rng(0).choice(total, size=n, replace=False))

    def tune_users(self) -> list[np.ndarray]:
        """The validation users the adaptation grid runs on (see ``tune_index``)."""
        keep = self.tune_index()
        return self.splits.valid if keep is None else [self.splits.valid[i] for i in keep]

    def tune_user_features(self) -> np.ndarray | None:
        """The feature rows of ``tune_users`` (None without user features)."""
        feats, keep = self.splits.user_features("valid"), self.tune_index()
        return feats if feats is None or keep is None else feats[keep]

    def scorer(self, loaded: LoadedModel, inner_lr: float) -> AdaptingScorer:
        """``loaded``'s model adapting with ``inner_lr``, on this protocol's device (the model is moved
        there, in place: a no-op once it is)."""
        model = loaded.model.to(self.device)
        return AdaptingScorer(model, loaded.algorithm, inner_lr, loaded.algorithm_state, self.memo)

    def fused(self, scorer: AdaptingScorer, weight: float | None) -> Scorer:
        """``scorer`` fused with the co-occurrence counts at ``weight`` (None: unchanged)."""
        return scorer if weight is None else FusedScorer(scorer, self.cooc_model, weight)

    @cached_property
    def cooc_model(self) -> ItemCooccurrence:
        """The co-occurrence counts of the training users (the baseline's and the fusion's)."""
        return ItemCooccurrence(self.splits.train, self.splits.num_items, self.cooc_horizon, COOC_RECENCY)

    def choose_fusion(
        self, loaded: LoadedModel, adaptation: Adaptation, stored: float | None = None
    ) -> Adaptation:
        """``adaptation`` with the fusion weight of ``FUSION_WEIGHTS`` that scores best on the tuning
        validation users (mean NDCG@10 over the shots; ties: the smaller weight). ``stored``: a fused
        export's weight, used instead of the best (what recommend and serve apply), scored beside the
        candidates so the report shows whether these shots' validation users would choose another."""
        if not self.splits.valid:
            raise ValueError(
                "no validation users to choose the fusion weight on (data.valid_frac is 0?); pass --no-fuse"
            )
        users, feats = self.tune_users(), self.tune_user_features()
        weights = sorted({*FUSION_WEIGHTS, *([] if stored is None else [stored])})
        scores = {}
        fused = self.fused_results(loaded, adaptation, weights, users, feats)
        for weight, res in zip(weights, fused, strict=True):
            scores[weight] = float(np.mean([res[k][CRITERION].mean() for k in self.shots if res.get(k)]))
        best = FUSION_WEIGHTS[0]
        for weight in FUSION_WEIGHTS[1:]:
            if scores[weight] > scores[best] + 1e-12:
                best = weight
        chosen = best if stored is None else stored
        return replace(
            adaptation,
            fusion=chosen,
            fusion_scores=scores,
            val_score=scores[chosen],
            valid_users=len(users),
            fusion_from="valid" if stored is None else "export",
            fusion_best=best,
        )

    def fused_results(
        self,
        loaded: LoadedModel,
        adaptation: Adaptation,
        weights: list[float],
        users: list[np.ndarray],
        user_features: np.ndarray | None,
    ) -> list[PerUser]:
        """``adapted_per_user`` of ``adaptation`` fused at each of ``weights``: one :class:`FusionWeights`
        pass per group of shots that share a setting (the model adapts once for all the weights)."""
        groups = adaptation.groups(self.shots)
        results: list[PerUser] = [{} for _ in weights]
        for (steps, lr), shots in groups.items():
            part = self if len(groups) == 1 else replace(self, shots=tuple(shots), support_max=self.longest)
            scorer = FusionWeights(self.scorer(loaded, lr), steps, self.cooc_model, weights)
            shared = part.per_setting(scorer, users, user_features)
            if shared is None:  # a protocol without the one-pass path: weight by weight
                fused = [replace(adaptation, fusion=w) for w in weights]
                return [self.adapted_per_user(loaded, a, users, user_features) for a in fused]
            for out, res in zip(results, shared, strict=True):
                if res is None:
                    raise Diverged(f"test-time adaptation diverged ({steps} steps at inner lr {lr})")
                out.update(res)
        return [{k: res[k] for k in self.shots} for res in results]

    def evaluate(
        self,
        loaded: LoadedModel,
        split: str = "test",
        finetune: bool = False,
        fixed: tuple[int, float] | None = None,
        name: str | None = None,
        fuse: bool = False,
        adaptation: Adaptation | None = None,
        stored_weight: float | None = None,
    ) -> MethodResult:
        """A trained model under its algorithm's protocol: adaptation chosen on validation users, then scored
        on ``split``. The default name is the algorithm (``+finetune`` when fine-tuned, ``+cooc`` fused).
        ``fuse``: fused with the co-occurrence counts, the weight chosen on validation users at the chosen
        adaptation (``choose_fusion``). ``adaptation``: one ``choose_adaptation`` already returned for
        this model and ``finetune`` (the reproduction's fused variant reuses its plain variant's), so the
        search, deterministic, is not run twice. ``stored_weight``: a fused export's weight, fused at instead
        of the best on validation users (``choose_fusion``)."""
        users = self.users(split)
        if adaptation is None:
            adaptation = self.choose_adaptation(loaded, finetune, fixed)
        if fuse:
            adaptation = self.choose_fusion(loaded, adaptation, stored_weight)
        return MethodResult(
            name or method_name(loaded.algorithm, finetune, fuse=fuse),
            self.adapted_per_user(loaded, adaptation, users, self.splits.user_features(split)),
            {"algorithm": loaded.algorithm, "adaptation": adaptation.as_dict(), **self.facts()},
        )

    def adapted_per_user(
        self,
        loaded: LoadedModel,
        adaptation: Adaptation,
        users: list[np.ndarray],
        user_features: np.ndarray | None = None,
    ) -> PerUser:
        """Per-user results of ``loaded`` under ``adaptation``: each group of shot counts that shares a
        setting is scored by this protocol restricted to those shots (the same users and windows per K)."""
        groups = adaptation.groups(self.shots)
        results: PerUser = {}
        for (steps, lr), shots in groups.items():
            # Restricted to some shots, the support buffer stays as long as for all of them.
            part = self if len(groups) == 1 else replace(self, shots=tuple(shots), support_max=self.longest)
            scorer = self.fused(self.scorer(loaded, lr), adaptation.fusion)
            results.update(part.per_user(scorer, users, steps, user_features=user_features))
        return {k: results[k] for k in self.shots}

    @property
    def longest(self) -> int:
        """The support buffer the batches are built with: the longest support of any shot count."""
        return max(self.support_max, max(self.shots))

    def facts(self) -> dict[str, Any]:
        """What every result of this protocol records about it (none for the plain cold-start one)."""
        return {}

    def baseline(self, name: str, scorer: Scorer, split: str, info: dict[str, Any]) -> MethodResult:
        """A reference method that needs no training and no adaptation: ``scorer`` on ``split``'s users,
        the protocol's facts added to ``info``. Every protocol's baselines go through here. They score on
        the CPU whatever the protocol's device: their scorers compute there (and no number depends on it)."""
        per_user = self.per_user(scorer, self.users(split), device="cpu")
        return MethodResult(name, per_user, {**info, **self.facts()})

    def popularity(self, split: str = "test") -> MethodResult:
        scorer = PopularityScorer(self.splits.train, self.splits.num_items)
        return self.baseline("popularity", scorer, split, {"counted_on": "train users"})

    @property
    def cooc_horizon(self) -> int:
        """How far ahead the co-occurrence baseline counts: the relevant set's length."""
        return self.eval_cfg.num_relevant

    def cooccurrence(self, split: str = "test") -> MethodResult:
        scorer = CooccurrenceScorer(self.cooc_model)
        info = {"counted_on": "train users", "horizon": self.cooc_horizon, "recency": COOC_RECENCY}
        return self.baseline(COOCCURRENCE, scorer, split, info)

    def baselines(self, split: str = "test", seed: int = 0) -> list[MethodResult]:
        """This protocol's reference methods (``seed``: for the seeded ones of the item protocols)."""
        del seed
        return [self.popularity(split), self.cooccurrence(split)]


@dataclass
class LeaveOneOutProtocol(ColdStartProtocol):
    """The warm leave-one-out protocol (``data.protocol: loo``; see ``eval/loo.py``): every user of the
    split, its sequence's last item the target. The splits are ``leave_one_out``'s: valid sequences end with
    the second-last item, test sequences with the last. The model reads the last ``support_max`` (=
    ``model.max_seq_len - 1``, one position is BOS) history items. Per-user results sit under the key
    ``LOO`` where the cold-start protocol has its shot counts, so the adaptation search (``tune``, on the
    validation targets), the report and the paired statistics are the cold-start ones unchanged."""

    mask_seen: bool = True

    @classmethod
    def build(
        cls, splits: UserSplits, max_seq_len: int, eval_cfg: EvalConfig, mask_seen: bool = True
    ) -> LeaveOneOutProtocol:
        if max_seq_len < 2:
            raise ValueError(f"model.max_seq_len={max_seq_len}: leave-one-out needs BOS and one item")
        return cls(splits, (LOO,), max_seq_len - 1, eval_cfg, mask_seen)

    split_hint = "the held-out targets"
    # The target is the single next item: the co-occurrence baseline is the first-order Markov chain.
    cooc_horizon = 1

    def empty_split(self, split: str) -> str:
        return (
            f"no {split} sequences: was the model trained with data.protocol=loo, on users with at "
            "least 3 interactions?"
        )

    def batches(
        self,
        sequences: list[np.ndarray],
        ks: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        user_features: np.ndarray | None = None,
    ) -> UserBatches:
        """HR@k / NDCG@k / MRR of each sequence's last item, ranked over all items (history masked or not)."""
        return LooBatches.build(
            self.splits.num_items,
            sequences,
            window=self.support_max,
            ks=LOO_KS if ks is None else ks,
            mask_seen=self.mask_seen,
            **self.batch_options(device, user_features),
        )

    def facts(self) -> dict[str, Any]:
        return {"protocol": "loo", "window": self.support_max, "mask_seen": self.mask_seen}
