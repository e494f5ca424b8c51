"""Where the evaluation's batches run: in this process, over the Ray Train ranks, or on Ray actors.

An evaluation is a list of independent batches (``ColdStartBatches``, ``LooBatches``, ``NewItemBatches``):
batch ``i`` is a fixed group of users of one shot count, and its result is one metric value per user. A runner
maps ``fn(payload, i)`` over the batch indices and returns the results in batch order; ``assemble`` then
concatenates them. Because every runner scores exactly the batches of the in-process loop (same users, same
batch composition, same model), the per-user arrays are the same numbers wherever the batches ran:

- :class:`InProcess`: one after the other (``eval.workers: 1``, the default; what the code always did);
- :class:`AcrossRanks`: inside a distributed training job, rank ``r`` scores batches ``r, r + W, ...`` and
  one ``all_gather`` per evaluation brings every rank the whole result (periodic validation);
- ``metarec_dist.runtime.eval_pool.ActorPool``: Ray actors, each holding the model, pull batches as they
  finish (``metarec evaluate``, the adaptation grid search and ``eval/reproduce.py`` with
  ``eval.workers: N``).

The unit of parallelism is a batch of ``eval.batch_users`` users: an evaluation with fewer batches than
workers leaves some idle (lower ``eval.batch_users`` to cut it finer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from metarec_dist.eval.cold_start import PerUser, Scorer, SettingsScorer

if TYPE_CHECKING:
    from metarec_dist.runtime.context import WorkerContext

BatchFn = Callable[[Any, int], Any]


class UserBatches(Protocol):
    """An evaluation cut into independent batches of users (see the module docstring)."""

    def __len__(self) -> int: ...

    def run(self, scorer: Scorer, index: int, steps: int | None) -> dict[str, np.ndarray]: ...

    def assemble(self, parts: Sequence[dict[str, np.ndarray]]) -> PerUser: ...


class BatchRunner(Protocol):
    def map(self, fn: BatchFn, payload: Any, n: int) -> list[Any]:
        """``[fn(payload, i) for i in range(n)]``, wherever it runs; the first error (in batch order) raised
        as itself."""
        ...


class InProcess:
    """Every batch here, in order (the first error stops the rest, as the plain loop did)."""

    def map(self, fn: BatchFn, payload: Any, n: int) -> list[Any]:
        return [fn(payload, i) for i in range(n)]


class AcrossRanks:
    """Rank ``r`` of ``W`` scores batches ``r, r + W, r + 2W, ...``; one ``all_gather`` returns the whole
    list to every rank. Under ZeRO-3 scoring is a collective forward, so every rank runs the same number of
    batches: a rank whose share is one short scores the last batch again and drops the result. An error on
    one rank is gathered (not raised before the gather, which would leave the others waiting in it) and
    raised on every rank."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def map(self, fn: BatchFn, payload: Any, n: int) -> list[Any]:
        rank, world = self.ctx.rank, self.ctx.world_size
        mine: list[Any] = []
        for i in range(rank, world * -(-n // world), world):
            try:
                result = fn(payload, min(i, n - 1))
            except Exception as exc:  # re-raised below, after the collective every rank must reach
                result = _Failed(exc)
            mine.append(result if i < n else None)
        parts = self.ctx.all_gather(mine)
        return ordered_results([parts[i % world][i // world] for i in range(n)])


class _Failed:
    """An exception travelling as a result (through a gather or back from an actor)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def ordered_results(results: list[Any]) -> list[Any]:
    """``results`` with the first failure (in batch order) raised as its own exception."""
    for r in results:
        if isinstance(r, _Failed):
            raise r.exc
    return results


def call_batch(fn: BatchFn, payload: Any, index: int) -> Any:
    """``fn(payload, index)``, an exception returned as a result (how a remote runner sends it back)."""
    try:
        return fn(payload, index)
    except Exception as exc:  # handed back to the caller and raised there by _ordered
        return _Failed(exc)


def score_batch(payload: tuple[UserBatches, Scorer, int | None], index: int) -> dict[str, np.ndarray]:
    """One batch's metrics; a module-level function so that Ray actors can receive it."""
    batches, scorer, steps = payload
    return batches.run(scorer, index, steps)


def run_batches(
    batches: UserBatches, scorer: Scorer, steps: int | None, runner: BatchRunner | None = None
) -> PerUser:
    """The per-user metrics of ``scorer`` on ``batches``, the batches run by ``runner`` (default: here)."""
    runner = runner or InProcess()
    return batches.assemble(runner.map(score_batch, (batches, scorer, steps), len(batches)))


def score_batch_settings(payload: tuple[Any, SettingsScorer], index: int) -> list[Any]:
    """One batch's metrics under each of the scorer's settings (``RankedBatches.run_settings``: cold start,
    loo and the item protocols)."""
    batches, scorer = payload
    return batches.run_settings(scorer, index)


def run_settings(
    batches: Any, scorer: SettingsScorer, runner: BatchRunner | None = None
) -> list[PerUser | None]:
    """Per setting of ``scorer``: the per-user metrics ``run_batches`` gives for that setting alone, or None
    where the setting diverged on any batch. The batches run on ``runner`` as in ``run_batches``."""
    runner = runner or InProcess()
    parts = runner.map(score_batch_settings, (batches, scorer), len(batches))
    out: list[PerUser | None] = []
    for i in range(scorer.num_settings):
        mine = [part[i] for part in parts]
        out.append(None if any(m is None for m in mine) else batches.assemble(mine))
    return out


def runner_for(workers: int) -> BatchRunner:
    """``eval.workers``: 1 runs here; N > 1 runs on N Ray actors (a cluster is started or joined)."""
    if workers <= 1:
        return InProcess()
    from metarec_dist.runtime.eval_pool import actor_pool

    return actor_pool(workers)


def close_runners() -> None:
    """Stop this process's evaluation actors, if it started any (and the local Ray cluster with them)."""
    import sys

    if "metarec_dist.runtime.eval_pool" in sys.modules:  # never imports Ray just to find nothing to close
        from metarec_dist.runtime.eval_pool import close_actor_pool

        close_actor_pool(shutdown=True)
