"""Cold-start evaluation: adapt on each held-out user's first K items, rank ALL items, score the next ones.

Full ranking only (no sampled negatives): sampled metrics are several times higher and do not rank models
reliably. Support items are removed from the ranking and from the relevant set (they were already seen);
the relevant set is the user's next ``num_relevant`` interactions after the support.

Per-user metric arrays are the unit everything is built from: the same users in the same order for every
scorer (a user is kept iff it has an unseen item after its first K), so paired bootstrap intervals and seed
averages are plain array arithmetic.

Memory: no ``[users x items]`` score matrix. A scorer that can (``ChunkScorer``: the engines, the
meta-learner, ``AdaptingScorer``) is called through ``score_chunks(batch, steps, sink)``: its forward adapts
the batch once and hands the sink a ``score_range(lo, hi)``, and :class:`~metarec_dist.metrics.ranking.
ChunkedRanking` pulls ``eval.item_chunk`` items at a time from it, keeping only per-user counts (the rank of
each relevant item and of the next item), so memory is ``batch_users x item_chunk`` whatever the catalogue.
Scoring stays inside the engine's forward, which under ZeRO-3 is where the item table is gathered; a
separate "score this item range" call was not chosen because it would re-run the adaptation (and re-gather
the table) for every chunk. Scorers with only ``score(batch, steps)`` (popularity, test doubles) still work:
their full matrix is read through the same chunked code. Either way the metrics are exactly those of
:func:`~metarec_dist.metrics.ranking.ranking_metrics` on the full matrix.
"""

from __future__ import annotations

import hashlib
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from metarec_dist.metrics.ranking import DEFAULT_ITEM_CHUNK, PAD, ChunkedRanking, ScoreRange, ScoreSink
from metarec_dist.models.recommender import UserState
from metarec_dist.tasks.sampler import prefix_batch
from metarec_dist.tasks.types import MetaBatch, bos_id

PerUser = dict[int, dict[str, np.ndarray]]  # shots K -> metric -> one value per evaluated user


def eval_targets(
    sequences: list[np.ndarray], shots: int, num_relevant: int
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """For users with at least one unseen item after their first ``shots``: kept user indices, support
    ``[U, shots]``, relevant ``[U, num_relevant]`` and next item ``[U]`` (all as 0-based score columns,
    PAD where absent)."""
    keep, support, relevant, nxt = [], [], [], []
    for u, seq in enumerate(sequences):
        if len(seq) <= shots:
            continue
        seen = set(seq[:shots].tolist())
        future = list(dict.fromkeys(int(i) for i in seq[shots : shots + num_relevant] if i not in seen))
        if not future:
            continue
        keep.append(u)
        support.append(seq[:shots] - 1)
        relevant.append([i - 1 for i in future] + [PAD] * (num_relevant - len(future)))
        nxt.append(future[0] - 1)
    if not keep:
        return (
            [],
            np.zeros((0, shots), np.int64),
            np.zeros((0, num_relevant), np.int64),
            np.zeros(0, np.int64),
        )
    return keep, np.stack(support).astype(np.int64), np.array(relevant, np.int64), np.array(nxt, np.int64)


class Scorer(Protocol):
    """Ranks every item for a batch of users (RecBole's ``full_sort_predict``): a training engine, the
    meta-learner, or a baseline."""

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        """Scores ``[U, V]`` after ``steps`` inner steps on each user's support. None: the scorer's own
        adaptation (the training engine: the algorithm's trained ``meta.adaptation_steps``); a scorer without
        one (``AdaptingScorer``, the evaluation's) refuses None and takes an explicit count."""
        ...


class Diverged(ValueError):
    """Test-time adaptation produced non-finite scores (an inner lr too large for the steps)."""


SettingSink = Callable[[int, ScoreRange], None]
"""What a :class:`SettingsScorer` hands each setting's scores to: ``sink(setting, score_range)``."""


class SettingsScorer(Protocol):
    """Scores a batch under several settings in one call (e.g. every point of the adaptation grid, or every
    fusion weight), sharing the work the settings have in common. ``score_settings`` calls ``sink(i,
    score_range)`` once per setting ``i < num_settings`` (in any order); a setting whose scores are not
    finite hands a ``score_range`` that raises :class:`Diverged`."""

    num_settings: int

    def score_settings(self, batch: MetaBatch, sink: SettingSink) -> None: ...


@runtime_checkable
class ChunkScorer(Scorer, Protocol):
    """A scorer that can hand out its scores chunk by chunk (see the module docstring)."""

    def score_chunks(self, batch: MetaBatch, steps: int | None, sink: ScoreSink) -> None:
        """Calls ``sink(score_range)`` once; ``score_range(lo, hi)`` gives the scores ``[U, hi - lo]``."""
        ...


class Ranked(Protocol):
    """What a batch's scores stream into: ``run(score_range)`` once, then ``result()``, one value per user
    and metric (``ChunkedRanking``, or a protocol's wrapper around it)."""

    def run(self, score_range: ScoreRange) -> None: ...

    def result(self) -> dict[str, torch.Tensor]: ...


def score_into(scorer: Scorer, batch: MetaBatch, steps: int | None, ranking: Ranked) -> None:
    """Streams ``scorer``'s scores of ``batch`` into ``ranking``, as float32 (as the full path always did)."""

    def as_float(score_range: ScoreRange) -> None:
        ranking.run(lambda lo, hi: score_range(lo, hi).float())

    if isinstance(scorer, ChunkScorer):
        scorer.score_chunks(batch, steps, as_float)
    else:
        full = scorer.score(batch, steps)
        as_float(lambda lo, hi: full[:, lo:hi])


class RankedBatches(ABC):
    """How every protocol's batches (cold-start, leave-one-out, the item protocols) score batch ``index``:
    a subclass says what the batch is (``batch``: a ``MetaBatch`` on the device) and what ranks its scores
    (``ranking``: a fresh :class:`Ranked` per call). ``run`` scores one setting; ``run_settings`` every
    setting of a :class:`SettingsScorer` (the adaptation grid, the fusion weights) in one call, each setting
    ranked exactly as ``run`` ranks it alone. ``spans``: one entry per batch (a subclass's field)."""

    spans: Sequence[tuple[int, ...]]

    def __len__(self) -> int:
        return len(self.spans)

    @abstractmethod
    def batch(self, index: int) -> MetaBatch:
        """Batch ``index``'s users as a ``MetaBatch`` on the device."""

    @abstractmethod
    def ranking(self, index: int) -> Ranked:
        """A fresh :class:`Ranked` for batch ``index``'s scores."""

    @torch.no_grad()
    def run(self, scorer: Scorer, index: int, steps: int | None) -> dict[str, np.ndarray]:
        """The metrics of batch ``index``: one value per user of the batch."""
        ranking = self.ranking(index)
        score_into(scorer, self.batch(index), steps, ranking)
        return {name: v.cpu().numpy() for name, v in ranking.result().items()}

    @torch.no_grad()
    def run_settings(self, scorer: SettingsScorer, index: int) -> list[dict[str, np.ndarray] | None]:
        """The metrics of batch ``index`` under each of ``scorer``'s settings, in its order (None where
        that setting's scores diverged): what ``run`` gives for each setting, from one call."""
        out: list[dict[str, np.ndarray] | None] = [None] * scorer.num_settings

        def sink(setting: int, score_range: ScoreRange) -> None:
            ranking = self.ranking(index)
            try:
                ranking.run(lambda lo, hi: score_range(lo, hi).float())
            except Diverged:
                return
            out[setting] = {name: v.cpu().numpy() for name, v in ranking.result().items()}

        scorer.score_settings(self.batch(index), sink)
        return out


@dataclass
class ColdStartBatches(RankedBatches):
    """The cold-start evaluation as its batches: batch ``i`` is ``batch_users`` consecutive kept users of
    one shot count, exactly the batches of the in-order loop. Each batch is scored on its own, so they can
    run anywhere (in order in this process, strided over the Ray Train ranks, or on Ray actors:
    ``eval/distributed.py``), and :meth:`assemble` concatenates their metrics into the per-user arrays of
    the in-order run, value for value."""

    num_items: int
    sequences: list[np.ndarray]
    support_max: int
    ks: tuple[int, ...]
    item_chunk: int
    device: torch.device | str
    targets: dict[int, tuple[list[int], np.ndarray, np.ndarray, np.ndarray]]  # K -> eval_targets
    spans: list[tuple[int, int, int]]  # (K, lo, hi) over that K's kept users
    user_features: np.ndarray | None = None  # [len(sequences), F] feature ids, None without features

    @classmethod
    def build(
        cls,
        num_items: int,
        sequences: list[np.ndarray],
        shots: Sequence[int],
        support_max: int,
        num_relevant: int = 10,
        ks: Sequence[int] = (10, 20),
        batch_users: int = 256,
        device: torch.device | str = "cpu",
        item_chunk: int = DEFAULT_ITEM_CHUNK,
        user_features: np.ndarray | None = None,
    ) -> ColdStartBatches:
        targets, spans = {}, []
        for k in shots:
            check_shots(k, support_max)
            if k in targets:
                continue
            targets[k] = eval_targets(sequences, k, num_relevant)
            spans += shot_spans(k, len(targets[k][0]), batch_users)
        return cls(
            num_items, sequences, support_max, tuple(ks), item_chunk, device, targets, spans, user_features
        )

    def batch(self, index: int) -> MetaBatch:
        """The users of batch ``index`` as a ``MetaBatch`` on the device: support = their first K items."""
        k, lo, hi = self.spans[index]
        idx = self.targets[k][0][lo:hi]
        feats = None if self.user_features is None else self.user_features[idx]
        users = [self.sequences[u] for u in idx]
        return prefix_batch(users, k, self.support_max, bos_id(self.num_items), feats).to(self.device)

    def ranking(self, index: int) -> ChunkedRanking:
        """A fresh ranking of batch ``index``'s relevant and next items, its support excluded."""
        k, lo, hi = self.spans[index]
        _, support, relevant, nxt = self.targets[k]
        return ChunkedRanking(
            self.num_items,
            torch.from_numpy(relevant[lo:hi]),
            torch.from_numpy(nxt[lo:hi]),
            ks=self.ks,
            exclude=torch.from_numpy(support[lo:hi]),
            item_chunk=self.item_chunk,
        )

    def assemble(self, parts: Sequence[dict[str, np.ndarray]]) -> PerUser:
        return assemble_shots(self.targets, self.spans, parts)


def check_shots(shots: int, support_max: int) -> None:
    if shots > support_max:
        raise ValueError(f"eval.shots: {shots} exceeds tasks.support_max ({support_max})")


def shot_spans(shots: int, num_users: int, batch_users: int) -> list[tuple[int, int, int]]:
    """The batches of one shot count: ``(K, lo, hi)`` over its ``num_users`` kept users, in order."""
    return [(shots, lo, min(lo + batch_users, num_users)) for lo in range(0, num_users, batch_users)]


def assemble_shots(
    shots: Iterable[int], spans: Sequence[tuple[int, int, int]], parts: Sequence[dict[str, np.ndarray]]
) -> PerUser:
    """Batch results (in batch order, one per span) into ``{K: {metric: per-user array}}``; a shot count
    with no evaluated user gets ``{}``."""
    results: PerUser = {k: {} for k in shots}
    grouped: dict[int, list[dict[str, np.ndarray]]] = {}
    for (k, _, _), part in zip(spans, parts, strict=True):
        grouped.setdefault(k, []).append(part)
    for k, batches in grouped.items():
        results[k] = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    return results


def evaluate_cold_start(scorer: Scorer, *args: Any, steps: int | None = None, **kwargs: Any) -> PerUser:
    """Per shot count K, per metric, one value per evaluated user: :meth:`ColdStartBatches.build`'s
    arguments, every batch in this process, in order; items are ranked ``item_chunk`` at a time. Under
    ZeRO-3 every rank must run the same number of batches (scoring is a collective forward). ``steps``: the
    adaptation steps (None: the algorithm's)."""
    batches = ColdStartBatches.build(*args, **kwargs)
    return batches.assemble([batches.run(scorer, i, steps) for i in range(len(batches))])


def flat_means(results: PerUser) -> dict[str, float]:
    """Means over users under flat keys for logging: ``ndcg@10@k3`` etc."""
    return {
        f"{name}@k{k}": float(v.mean()) for k, res in results.items() for name, v in res.items() if len(v)
    }


MEMO_BYTES = 256 * 2**20  # what a StateMemo keeps at most (a 256-user batch of a d=128 model: ~0.15 MB)


class StateMemo:
    """Adapted user states (``UserState``) of batches already scored, so that scoring the same users at
    the same adaptation again (the fused variant after the plain one; the fusion weight's choice on the
    tuning users at the grid's chosen point) reads them instead of encoding and adapting a second time.

    An entry is found only by a key of everything its state depends on: the model object (a weak
    reference: never another model at the same address) and every parameter and buffer's storage and
    in-place version counter (a weight changed in place, moved or replaced is a miss), the algorithm, its
    own parameters' values, the inner lr, the steps, and the batch's inputs byte for byte. Beyond
    ``max_bytes`` the entries of models no longer alive leave first, then the oldest. Pickled empty (Ray
    actors get their own)."""

    def __init__(self, max_bytes: int = MEMO_BYTES) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: OrderedDict[bytes, tuple[weakref.ref, UserState, int]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_bytes"])

    @staticmethod
    def key(model: nn.Module, setting: Sequence[Any], batch: MetaBatch, steps: int) -> bytes:
        """The key of ``model``'s state for ``batch`` after ``steps`` at ``setting`` (algorithm, lr, its
        parameters: anything else the adaptation depends on, as values or tensors)."""
        digest = hashlib.blake2b(digest_size=32)
        for t in (*model.parameters(), *model.buffers()):
            digest.update(repr((tuple(t.shape), str(t.device), t.data_ptr(), t._version)).encode())
        for part in (*setting, steps, batch.support_len, *tensor_fields(batch)):
            if isinstance(part, torch.Tensor):
                digest.update(repr((tuple(part.shape), str(part.dtype), str(part.device))).encode())
                digest.update(part.detach().cpu().contiguous().numpy().tobytes())
            else:
                digest.update(repr(part).encode())
        return digest.digest()

    def get(self, model: nn.Module, key: bytes) -> UserState | None:
        entry = self.entries.get(key)
        return entry[1] if entry is not None and entry[0]() is model else None

    def put(self, model: nn.Module, key: bytes, state: UserState) -> None:
        state = UserState(*(None if t is None else t.detach() for t in state))
        size = sum(t.numel() * t.element_size() for t in state if t is not None)
        if size > self.max_bytes or key in self.entries:
            return
        self.entries[key] = (weakref.ref(model), state, size)
        self.bytes += size
        if self.bytes > self.max_bytes:  # first the entries of models no longer alive, then the oldest
            for old in [k for k, (ref, _, _) in self.entries.items() if ref() is None]:
                self.bytes -= self.entries.pop(old)[2]
        while self.bytes > self.max_bytes:
            _, (_, _, dropped) = self.entries.popitem(last=False)
            self.bytes -= dropped


def tensor_fields(batch: MetaBatch) -> list[Any]:
    """The batch's inputs the encoding and the adaptation read."""
    return [batch.item_ids, batch.attention_mask, batch.support_targets, batch.user_features]
