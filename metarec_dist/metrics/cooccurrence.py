"""Item co-occurrence baseline: "users who had this item went on to have these".

No training, no neural network: for every training user and every position p, each of the next ``horizon``
items that the user had not had before counts once for the item at p. A cold-start user's scores are the
row-normalised counts of their support items, the most recent weighted most. With ``horizon`` equal to the
evaluation's relevant set (the next ``eval.num_relevant`` items) the counts estimate exactly what the
cold-start protocol rewards; with ``horizon`` 1 it is the first-order Markov chain of next items.

Why it is here: on Amazon Sports this count model is a stronger cold-start baseline than our SASRec
(docs/results/amazon-sports.md), so a method's table has to show it beside popularity.

The counts live in CSR arrays (``indptr``, ``indices``, ``data``): a catalogue's matrix has at most
``interactions x horizon`` non-zeros, never ``items x items``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from metarec_dist.metrics.popularity import popularity_scores

__all__ = ["ItemCooccurrence", "first_occurrences", "pair_counts"]

# Scores add popularity x this (in float64): it orders only the items the counts tie on, above all the
# zero-count ones, so a user whose support items never co-occur with anything gets the popularity list.
POPULARITY_TIE_BREAK = 1e-12


def first_occurrences(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Boolean mask over a flat log: position q holds the first time its user had its item. Exactly the
    items the cold-start relevant set keeps (it drops support items and repeats), at every split point."""
    key = users.astype(np.int64) * (int(items.max(initial=0)) + 1) + items
    _, first = np.unique(key, return_index=True)
    mask = np.zeros(len(items), dtype=bool)
    mask[first] = True
    return mask


def _check_settings(horizon: int, recency: float) -> None:
    if horizon < 1:
        raise ValueError(f"the co-occurrence horizon must be >= 1, got {horizon}")
    if not 0.0 < recency <= 1.0:
        raise ValueError(f"the co-occurrence recency weight must be in (0, 1], got {recency}")


def pair_counts(
    sequences: Sequence[np.ndarray], num_items: int, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The raw "followed within ``horizon``" counts, sorted by (row, column): ``rows``, ``cols`` (0-based
    items) and ``counts``; each of the next ``horizon`` items a user had not had before counts once for the
    item at each position."""
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences if len(s)]
    if not seqs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    items = np.concatenate(seqs) - 1  # 0-based columns
    users = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
    first = first_occurrences(users, items)
    src, dst = [], []
    for j in range(1, horizon + 1):
        ok = (users[:-j] == users[j:]) & first[j:]
        src.append(items[:-j][ok])
        dst.append(items[j:][ok])
    keys, counts = np.unique(np.concatenate(src) * num_items + np.concatenate(dst), return_counts=True)
    return keys // num_items, keys % num_items, counts


class ItemCooccurrence:
    """Row-normalised "followed within ``horizon``" counts over training sequences (ids 1..num_items).

    ``recency``: the weight of a support item ``d`` positions before the last is ``recency ** d``.
    """

    def __init__(
        self,
        train_sequences: Sequence[np.ndarray],
        num_items: int,
        horizon: int,
        recency: float = 0.5,
    ) -> None:
        _check_settings(horizon, recency)
        self.num_items, self.horizon, self.recency = num_items, horizon, recency
        self.indptr, self.indices, self.data = self._counts(train_sequences)
        pop = popularity_scores(train_sequences, num_items)[1:]
        self.tie_break = POPULARITY_TIE_BREAK * pop.double() / max(float(pop.max()), 1.0)

    def _counts(self, sequences: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, cols, counts = pair_counts(sequences, self.num_items, self.horizon)
        indptr = np.zeros(self.num_items + 1, np.int64)
        np.add.at(indptr, rows + 1, 1)
        indptr = np.cumsum(indptr)
        totals = np.bincount(rows, weights=counts, minlength=self.num_items)
        data = (counts / totals[rows]).astype(np.float32)
        return indptr, cols, data

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The counts as tensors (what an export with fusion saves; ``from_state_dict`` reads them)."""
        return {
            "indptr": torch.from_numpy(self.indptr),
            "indices": torch.from_numpy(self.indices),
            "data": torch.from_numpy(self.data),
            "tie_break": self.tie_break,
        }

    @classmethod
    def from_state_dict(
        cls, state: dict[str, torch.Tensor], num_items: int, horizon: int, recency: float
    ) -> ItemCooccurrence:
        """The counts ``state_dict`` saved, checked against the catalogue (``ValueError`` if they do not
        fit it)."""
        try:
            indptr, indices, data = (state[k].numpy() for k in ("indptr", "indices", "data"))
            tie_break = state["tie_break"].double()
        except KeyError as exc:
            raise ValueError(f"the co-occurrence counts lack {exc.args[0]!r}") from None
        _check_settings(horizon, recency)
        if any(a.ndim != 1 for a in (indptr, indices, data, tie_break)):
            raise ValueError("the co-occurrence counts are not one-dimensional arrays")
        if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
            raise ValueError("the co-occurrence counts' indptr / indices are not integer arrays")
        nnz = int(indptr[-1]) if len(indptr) else -1
        if (
            len(indptr) != num_items + 1
            or len(indices) != nnz
            or len(data) != nnz
            or tie_break.shape != (num_items,)
            or (nnz and not 0 <= int(indices.min()) <= int(indices.max()) < num_items)
            or bool(np.any(np.diff(indptr) < 0))
        ):
            raise ValueError(f"the co-occurrence counts do not fit a catalogue of {num_items} items")
        out = cls.__new__(cls)
        out.num_items, out.horizon, out.recency = num_items, horizon, recency
        out.indptr, out.indices = indptr.astype(np.int64), indices.astype(np.int64)
        out.data, out.tie_break = data.astype(np.float32), tie_break
        return out

    def weighted(self, support: torch.Tensor) -> torch.Tensor:
        """The recency-weighted sum of the support items' normalised count rows, float64 ``[T,
        num_items]`` (column j = item j + 1). ``support [T, K]``: item ids, 0 = none; the last column is
        the most recent item, as in ``MetaBatch.support_targets``."""
        sup = support.cpu().numpy()
        num_tasks, k = sup.shape
        weight = self.recency ** np.arange(k - 1, -1, -1, dtype=np.float64)
        task, pos = np.nonzero(sup > 0)
        rows = sup[task, pos] - 1
        lengths = self.indptr[rows + 1] - self.indptr[rows]
        starts = np.repeat(self.indptr[rows], lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        entries = starts + offsets
        out = torch.zeros(num_tasks, self.num_items, dtype=torch.float64)
        flat = np.repeat(task, lengths) * self.num_items + self.indices[entries]
        values = self.data[entries].astype(np.float64) * np.repeat(weight[pos], lengths)
        out.view(-1).index_add_(0, torch.from_numpy(flat), torch.from_numpy(values))
        return out

    def scores(self, support: torch.Tensor) -> torch.Tensor:
        """Ranking scores ``[T, num_items]``: :meth:`weighted`, ties broken by popularity, returned as each
        item's rank within its row (0 = last; float32 holds them exactly up to 2^24 items). Why ranks: the
        evaluation ranks float32 scores and puts a relevant item after every item it ties with, and in
        float32 the popularity tie-break would vanish next to weights of a few percent."""
        out = self.weighted(support) + self.tie_break
        return out.argsort(dim=1).argsort(dim=1).float()
