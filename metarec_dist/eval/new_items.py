"""Item cold start: rank items that no training batch ever held (``data.protocol: new_items``).

The data (``data/split.py: newest_items``) holds the newest ``data.new_item_frac`` of the items out of
training; the users are the cold-start user split. For a held-out (validation or test) user and a shot count
K:

- **support**: the user's first K interactions with OLD (training) items, in order; interactions with new
  items among them are skipped, so every model, the id-only one included, reads only items it was trained
  on. Users with fewer than K old items are not evaluated at that K.
- **what comes next**: the user's interactions after the K-th old one.
- ``new-items``: the candidates are the held-out items only; the relevant set is the distinct new items that
  come next (the first ``eval.num_relevant`` of them); users without one are not evaluated at that K.
- ``mixed``: the candidates are all items but the support, new and old together; the relevant set is the
  distinct items that come next (as in the cold-start protocol). Besides the usual metrics it reports
  ``new@10``, the share of the top 10 taken by new items, and ``any_new@10``, whether at least one new item
  reached the top 10 (ties broken against new items, so a score that cannot tell items apart earns none).

Both are deterministic: same data config, same users, same supports, same relevant sets.

Baselines in the same harness: :class:`RandomScorer` (seeded) and :class:`ContentKNNScorer` (cosine between
the support's bag of item-feature values and each item's); the id-only model is an ordinary checkpoint
trained on the same split without item features.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarec_dist.data.features import PAD as FEATURE_PAD
from metarec_dist.data.features import UNKNOWN, FeatureTables
from metarec_dist.errors import UserError
from metarec_dist.eval.cold_start import (
    PerUser,
    RankedBatches,
    Scorer,
    assemble_shots,
    check_shots,
    shot_spans,
)
from metarec_dist.eval.distributed import run_batches
from metarec_dist.metrics.ranking import DEFAULT_ITEM_CHUNK, PAD, ChunkedRanking, ScoreRange
from metarec_dist.tasks.sampler import prefix_batch
from metarec_dist.tasks.types import MetaBatch, bos_id

TOP = 10  # the cut-off of new@10 / any_new@10


@dataclass
class Targets:
    """One shot count's evaluated users: ``old[u]`` is user ``keep[u]``'s sequence of old items (its first
    ``shots`` are the support), ``relevant [U, R]`` and ``next_item [U]`` are 0-based item columns (PAD where
    absent), ``support [U, shots]`` the support's columns."""

    keep: list[int]
    old: list[np.ndarray]
    support: np.ndarray
    relevant: np.ndarray
    next_item: np.ndarray


def new_item_targets(
    sequences: list[np.ndarray], is_new: np.ndarray, shots: int, num_relevant: int, mixed: bool
) -> Targets:
    """The users evaluated at ``shots`` and their supports / relevant sets (see the module docstring).
    ``is_new[i]`` says whether item id ``i`` is held out (``is_new[0]``, padding, is False)."""
    keep: list[int] = []
    old: list[np.ndarray] = []
    support, relevant = [], []
    for u, seq in enumerate(sequences):
        old_pos = np.flatnonzero(~is_new[seq])
        if len(old_pos) < shots:
            continue
        sup = seq[old_pos[:shots]]
        later = seq[old_pos[shots - 1] + 1 :]
        if mixed:
            seen = set(sup.tolist())
            future = [int(i) for i in later if int(i) not in seen]
        else:
            future = [int(i) for i in later if is_new[i]]
        future = list(dict.fromkeys(future))[:num_relevant]
        if not future:
            continue
        keep.append(u)
        old.append(seq[old_pos])
        support.append(sup - 1)
        relevant.append([i - 1 for i in future] + [PAD] * (num_relevant - len(future)))
    if not keep:
        empty = np.zeros((0, num_relevant), np.int64)
        return Targets([], [], np.zeros((0, shots), np.int64), empty, np.zeros(0, np.int64))
    rel = np.array(relevant, np.int64)
    return Targets(keep, old, np.stack(support).astype(np.int64), rel, rel[:, 0].copy())


class CandidateRange:
    """A scorer's ``score_range`` over the whole catalogue seen through a sorted subset of its columns
    (``columns``): column ``j`` of the view is item column ``columns[j]``. Reads the catalogue at most
    ``item_chunk`` columns at a time, so memory stays ``users x item_chunk``."""

    def __init__(self, columns: torch.Tensor, item_chunk: int) -> None:
        self.columns, self.item_chunk = columns, item_chunk

    def view(self, score_range: ScoreRange) -> ScoreRange:
        def read(lo: int, hi: int) -> torch.Tensor:
            want = self.columns[lo:hi]
            parts = []
            start, stop = int(want[0]), int(want[-1]) + 1
            for a in range(start, stop, self.item_chunk):
                b = min(a + self.item_chunk, stop)
                inside = want[(want >= a) & (want < b)]
                if len(inside):
                    chunk = score_range(a, b)
                    parts.append(chunk[:, (inside - a).to(chunk.device)])
            return torch.cat(parts, dim=1)

        return read


class TopShare:
    """Per user, how many of the top ``k`` items (support excluded) are new, with ties broken against new
    items. Fed every score chunk once (``watch`` wraps a ``score_range``); exact for any chunk size."""

    def __init__(self, is_new_col: torch.Tensor, exclude: torch.Tensor, k: int = TOP) -> None:
        self.is_new_col, self.exclude, self.k = is_new_col, exclude, k
        self.values: torch.Tensor | None = None  # [U, <=k] best scores so far
        self.new: torch.Tensor | None = None  # [U, <=k] whether each of them is a new item
        self.seen: set[tuple[int, int]] = set()

    def watch(self, score_range: ScoreRange) -> ScoreRange:
        def read(lo: int, hi: int) -> torch.Tensor:
            scores = score_range(lo, hi)
            if (lo, hi) not in self.seen:  # ChunkedRanking reads each chunk twice when there are several
                self.seen.add((lo, hi))
                self._update(scores, lo, hi)
            return scores

        return read

    @staticmethod
    def candidates(scores: torch.Tensor, new: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The columns the two sorts below need (``top_candidates``; a test compares it with all)."""
        return top_candidates(scores, new, k)

    def _update(self, scores: torch.Tensor, lo: int, hi: int) -> None:
        scores = scores.float().clone()
        ex = self.exclude.to(scores.device)
        inside = (ex >= lo) & (ex < hi) & (ex != PAD)
        rows, cols = inside.nonzero(as_tuple=True)
        scores[rows, ex[rows, cols] - lo] = float("-inf")
        new = self.is_new_col[lo:hi].to(scores.device).expand_as(scores)
        if self.values is not None:
            scores = torch.cat([self.values, scores], dim=1)
            new = torch.cat([self.new, new], dim=1)
        scores, new = self.candidates(scores, new, self.k)
        # Old items first among equal scores: sort by "is new" (stable), then by score, descending (stable).
        order = torch.sort(new.to(torch.uint8), dim=1, stable=True).indices
        scores, new = scores.gather(1, order), new.gather(1, order)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.values, self.new = scores.gather(1, order), new.gather(1, order)

    def result(self) -> dict[str, torch.Tensor]:
        assert self.values is not None and self.new is not None
        real = self.new & torch.isfinite(self.values)  # an excluded item is no recommendation
        count = real.sum(dim=1).float()
        return {f"new@{self.k}": (count / self.k).cpu(), f"any_new@{self.k}": (count > 0).float().cpu()}


def top_candidates(scores: torch.Tensor, new: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The columns of ``scores`` / ``new`` ``[U, V]`` that can be among a row's top ``k`` in
    :class:`TopShare`'s order (score descending, then old before new, then column): those scoring at least
    the row's k-th best score, in column order, each row padded after them with ``-inf`` new items that sort
    after every real one. The two stable sorts then pick the same top ``k``, in the same order, from
    ``[U, c]`` (c: the most candidates of any row, about ``k``) as from ``[U, V]``. Unchanged where no
    column can be dropped (a row with ties or ``-inf`` at its k-th score down to its last column), or with a
    NaN (whose place in the sorts ``>=`` does not reproduce)."""
    rows_n, width = scores.shape
    if rows_n == 0 or width <= k or bool(torch.isnan(scores).any()):
        return scores, new
    keep = scores >= torch.topk(scores, k, dim=1).values[:, -1:]
    counts = keep.sum(dim=1)
    most = int(counts.max())
    if most >= width:
        return scores, new
    rows, cols = keep.nonzero(as_tuple=True)  # row by row, columns in order
    slot = torch.arange(len(rows), device=scores.device) - (torch.cumsum(counts, 0) - counts)[rows]
    top = torch.full((rows_n, most), float("-inf"), dtype=scores.dtype, device=scores.device)
    top_new = torch.ones((rows_n, most), dtype=new.dtype, device=new.device)
    top[rows, slot] = scores[rows, cols]
    top_new[rows, slot] = new[rows, cols]
    return top, top_new


class _Ranked:
    """What ``score_into`` streams scores into: the ranking metrics over the candidates (through
    ``CandidateRange``) and, in the mixed protocol, the share of new items in the top 10."""

    def __init__(
        self, ranking: ChunkedRanking, candidates: CandidateRange | None, top: TopShare | None
    ) -> None:
        self.ranking, self.candidates, self.top = ranking, candidates, top

    def run(self, score_range: ScoreRange) -> None:
        if self.top is not None:
            score_range = self.top.watch(score_range)
        if self.candidates is not None:
            score_range = self.candidates.view(score_range)
        self.ranking.run(score_range)

    def result(self) -> dict[str, torch.Tensor]:
        out = self.ranking.result()
        if self.top is not None:
            out.update(self.top.result())
        return out


def check_enough_new_items(num_new: int, num_items: int, ks: Sequence[int]) -> None:
    """The new-items protocol ranks only the held-out items: a cut-off (``ks``, and the next-item metrics'
    hr@10) beyond their number is an error that says which share of the items would do."""
    needed = max(*ks, TOP)
    if num_new >= needed:
        return
    frac = math.ceil(100 * needed / num_items) / 100
    lower = f", or lower eval.ks to {TOP}" if needed > TOP and num_new >= TOP else ""
    raise UserError(
        f"data.new_item_frac: the new-items protocol ranks only the {num_new} held-out items of {num_items}, "
        f"and its cut-offs (ks {list(ks)}, hr@10) need at least {needed}: raise data.new_item_frac to "
        f"{frac:g} or more{lower}"
    )


@dataclass
class NewItemBatches(RankedBatches):
    """The item cold-start evaluation as its batches (as :class:`~metarec_dist.eval.cold_start.
    ColdStartBatches`: batch ``i`` is ``batch_users`` consecutive evaluated users of one shot count, scored
    on its own, so the batches run in this process, over the training ranks or on Ray actors with the same
    per-user results). ``targets[K].relevant`` is already in candidate positions for ``new-items``."""

    num_items: int
    columns: torch.Tensor  # sorted 0-based item columns of the held-out items: the new-items candidates
    is_new_col: torch.Tensor  # [V] whether item column j is held out
    mixed: bool
    support_max: int
    ks: tuple[int, ...]
    item_chunk: int
    device: torch.device | str
    targets: dict[int, Targets]
    spans: list[tuple[int, int, int]]  # (K, lo, hi) over that K's evaluated users
    user_features: np.ndarray | None = None  # [len(sequences), F] feature ids, None without features

    @classmethod
    def build(
        cls,
        num_items: int,
        new_items: np.ndarray,
        sequences: list[np.ndarray],
        shots: Sequence[int],
        support_max: int,
        mixed: bool = False,
        num_relevant: int = 10,
        ks: Sequence[int] = (10, 20),
        batch_users: int = 256,
        device: torch.device | str = "cpu",
        item_chunk: int = DEFAULT_ITEM_CHUNK,
        user_features: np.ndarray | None = None,
    ) -> NewItemBatches:
        is_new = np.zeros(num_items + 1, dtype=bool)
        is_new[new_items] = True
        columns = torch.from_numpy(np.sort(new_items) - 1)
        if not mixed:
            check_enough_new_items(len(columns), num_items, ks)
        targets: dict[int, Targets] = {}
        spans: list[tuple[int, int, int]] = []
        for k in shots:
            check_shots(k, support_max)
            if k in targets:
                continue
            t = new_item_targets(sequences, is_new, k, num_relevant, mixed)
            if not mixed:
                t.relevant = _to_candidates(t.relevant, columns.numpy())
            targets[k] = t
            spans += shot_spans(k, len(t.keep), batch_users)
        is_new_col = torch.from_numpy(is_new[1:])
        return cls(
            num_items,
            columns,
            is_new_col,
            mixed,
            support_max,
            tuple(ks),
            item_chunk,
            device,
            targets,
            spans,
            user_features,
        )

    def batch(self, index: int) -> MetaBatch:
        """The users of batch ``index`` as a ``MetaBatch`` on the device: the support is their first K old
        items."""
        k, lo, hi = self.spans[index]
        t = self.targets[k]
        feats = None if self.user_features is None else self.user_features[t.keep[lo:hi]]
        return prefix_batch(t.old[lo:hi], k, self.support_max, bos_id(self.num_items), feats).to(self.device)

    def ranking(self, index: int) -> _Ranked:
        """A fresh ranking of batch ``index``: over the held-out items (``new-items``) or every item but the
        support, with the share of new items in the top 10 (``mixed``)."""
        k, lo, hi = self.spans[index]
        t = self.targets[k]
        support = torch.from_numpy(t.support[lo:hi])
        relevant = t.relevant[lo:hi]
        return _Ranked(
            ChunkedRanking(
                self.num_items if self.mixed else len(self.columns),
                torch.from_numpy(relevant),
                torch.from_numpy(relevant[:, 0].copy()),
                ks=self.ks,
                exclude=support if self.mixed else None,  # the support is old: never a new candidate
                item_chunk=self.item_chunk,
            ),
            None if self.mixed else CandidateRange(self.columns, self.item_chunk),
            TopShare(self.is_new_col, support) if self.mixed else None,
        )

    def assemble(self, parts: Sequence[dict[str, np.ndarray]]) -> PerUser:
        return assemble_shots(self.targets, self.spans, parts)


def evaluate_new_items(scorer: Scorer, *args: Any, steps: int | None = None, **kwargs: Any) -> PerUser:
    """Per shot count K, per metric, one value per evaluated user (``new-items`` or ``mixed``, see the
    module docstring): :meth:`NewItemBatches.build`'s arguments, every batch here in order. ``steps``: the
    adaptation steps (None: the algorithm's)."""
    return run_batches(NewItemBatches.build(*args, **kwargs), scorer, steps)


def _to_candidates(relevant: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Item columns -> positions among the sorted candidate columns (PAD stays PAD)."""
    pos = np.searchsorted(columns, np.where(relevant == PAD, 0, relevant))
    return np.where(relevant == PAD, PAD, pos).astype(np.int64)


# ----------------------------------------------------------------------------------------- baselines


def user_noise(batch: MetaBatch, num_items: int, seed: int) -> torch.Tensor:
    """Uniform noise ``[U, V]`` in [0, 1), each user's row from a generator seeded by ``seed`` and the
    user's own window (``item_ids``): a function of the user, not of which batch, process or order it was
    scored in, so the seeded baselines give the same numbers on Ray actors (``eval.workers``) as here."""
    rows = batch.item_ids.cpu().numpy()
    out = torch.empty(len(rows), num_items)
    for u, row in enumerate(rows):
        g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(row.tobytes()))
        out[u] = torch.rand(num_items, generator=g)
    return out


class RandomScorer:
    """Uniform random scores, seeded per user (:func:`user_noise`): the same seed gives the same ranking of
    the same users wherever they are scored. No two items tie (float scores), so no tie rule favours it."""

    def __init__(self, num_items: int, seed: int = 0) -> None:
        self.num_items, self.seed = num_items, seed

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        return user_noise(batch, self.num_items, self.seed)


def item_feature_matrix(features: FeatureTables, num_items: int) -> torch.Tensor:
    """Items x (feature, value) multi-hot ``[V, F]`` (row ``i`` is item ``i + 1``) over every non-text item
    feature: a token or a float bucket is one value, a token_seq (genres) a bag of them. Padding and
    "unknown" carry no content and are left out, so an item without known features is a zero row."""
    blocks = []
    for f in features.item.values():
        if f.kind == "title":
            continue
        ids = torch.as_tensor(np.asarray(f.values, dtype=np.int64)[1 : num_items + 1])
        ids = ids[:, None] if ids.dim() == 1 else ids
        width = len(f.vocab)
        onehot = torch.zeros(num_items, width + 1)
        known = (ids != FEATURE_PAD) & (ids != UNKNOWN)
        onehot.scatter_(1, torch.where(known, ids, torch.full_like(ids, width)), 1.0)
        blocks.append(onehot[:, :width])
    if not blocks:
        raise ValueError("content kNN: the data declares no item features besides text (data.item_features)")
    return torch.cat(blocks, dim=1)


class ContentKNNScorer:
    """Content kNN: the user's profile is the bag (counts) of the feature values of its support items; an
    item scores the cosine between that profile and its own multi-hot features (0 for an item without known
    features). Needs no training; reads the support from the batch (``support_targets``).

    Items with the same features score exactly alike, and the metrics rank a relevant item after everything
    it ties with; so that the baseline is credited with picking among equals at random rather than always
    wrongly, exact ties are broken by a seeded jitter of ``tie_break`` (far below the gap between two
    distinct cosines of these small count vectors). ``tie_break=0`` turns it off."""

    def __init__(
        self, features: FeatureTables, num_items: int, seed: int = 0, tie_break: float = 1e-6
    ) -> None:
        x = item_feature_matrix(features, num_items)
        self.items = x  # [V, F]
        self.unit = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.tie_break, self.seed = tie_break, seed

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        support = batch.support_targets.cpu()  # [U, Kmax] item ids, 0 where no item
        rows = torch.where(support > 0, support - 1, torch.zeros_like(support))
        profile = (self.items[rows] * (support > 0)[..., None]).sum(dim=1)  # [U, F]
        profile = profile / profile.norm(dim=1, keepdim=True).clamp_min(1e-12)
        scores = profile @ self.unit.T
        if self.tie_break:
            scores += self.tie_break * user_noise(batch, scores.shape[1], self.seed)
        return scores
