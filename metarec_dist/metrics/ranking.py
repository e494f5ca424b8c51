"""Full-ranking metrics for cold-start evaluation.

Every metric ranks *all* items (no sampled negatives: sampled metrics are known to disagree with the
full ranking). Inputs are a score matrix ``scores[U, V]`` whose columns are item indices ``0..V-1``; the
caller maps dataset ids to columns. Everything is vectorised over users.

Two kinds of ground truth:

* set metrics (``recall_at_k``, ``ndcg_at_k``): ``relevant[U, R]``, the user's next interactions, padded
  with ``pad`` (default -1). Duplicates are collapsed, so the relevant *set* is used.
* next-item metrics (``hit_rate_at_k``, ``next_item_ndcg_at_k``, ``mrr``): ``target[U]``, one item each.

Items removed with :func:`mask_seen` (e.g. the support set) score ``-inf`` and never count as a hit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

PAD = -1

__all__ = [
    "PAD",
    "hit_rate_at_k",
    "mask_seen",
    "mrr",
    "ndcg_at_k",
    "next_item_ndcg_at_k",
    "ranking_metrics",
    "recall_at_k",
    "topk_items",
]


# --------------------------------------------------------------------------- validation helpers


def _check_scores(scores: Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be [U, V], got shape {tuple(scores.shape)}")
    if scores.is_complex() or not scores.is_floating_point():
        raise ValueError(f"scores must be a real floating tensor, got {scores.dtype}")


def _check_k(k: int, num_items: int) -> None:
    # k > V would silently make recall/ndcg incomparable across catalogues, so refuse it.
    if not 1 <= k <= num_items:
        raise ValueError(f"k must be in [1, {num_items}], got {k}")


def _check_index_matrix(idx: Tensor, scores: Tensor, pad: int, name: str) -> Tensor:
    """Validate a padded [U, M] item-index matrix and return a boolean mask of its real entries."""
    if idx.dim() != 2 or idx.shape[0] != scores.shape[0]:
        raise ValueError(f"{name} must be [U={scores.shape[0]}, M], got shape {tuple(idx.shape)}")
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer item indices, got {idx.dtype}")
    valid = idx != pad
    bad = valid & ((idx < 0) | (idx >= scores.shape[1]))
    if bool(bad.any()):
        raise ValueError(f"{name} has item indices outside [0, {scores.shape[1]}) that are not pad={pad}")
    return valid


def _index_mask(idx: Tensor, valid: Tensor, num_items: int) -> Tensor:
    """Scatter padded indices into a dense bool [U, V] mask; duplicates collapse to one True."""
    # Pads are routed to an extra dump column that is dropped afterwards, so no Python-level filtering.
    routed = torch.where(valid, idx, torch.full_like(idx, num_items)).long()
    mask = torch.zeros(idx.shape[0], num_items + 1, dtype=torch.bool, device=idx.device)
    mask.scatter_(1, routed, True)
    return mask[:, :num_items]


# --------------------------------------------------------------------------- masking / top-k


def mask_seen(scores: Tensor, exclude: Tensor, pad: int = PAD) -> Tensor:
    """Return a copy of ``scores`` with the items in ``exclude`` set to ``-inf``.

    ``exclude`` is ``[U, M]`` item indices padded with ``pad``. Used to drop the support items a
    cold-start user already interacted with, so the model is not rewarded for re-ranking them.
    The input is not modified (callers often reuse the raw scores for several protocols).
    """
    _check_scores(scores)
    exclude = exclude.to(scores.device)
    valid = _check_index_matrix(exclude, scores, pad, "exclude")
    return scores.masked_fill(_index_mask(exclude, valid, scores.shape[1]), float("-inf"))


def topk_items(scores: Tensor, k: int) -> Tensor:
    """Indices ``LongTensor[U, k]`` of the k highest-scoring items per user, best first.

    Order among tied scores is whatever ``torch.topk`` returns (unspecified).
    """
    _check_scores(scores)
    _check_k(k, scores.shape[1])
    return torch.topk(scores, k, dim=1, largest=True, sorted=True).indices


def _topk_hits(scores: Tensor, relevant: Tensor, k: int, pad: int) -> tuple[Tensor, Tensor]:
    """Hit matrix ``bool[U, k]`` (best first) and the size of each user's relevant set ``[U]``."""
    _check_scores(scores)
    _check_k(k, scores.shape[1])
    relevant = relevant.to(scores.device)
    valid = _check_index_matrix(relevant, scores, pad, "relevant")
    rel_mask = _index_mask(relevant, valid, scores.shape[1])
    top = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    # A masked (-inf) item can only reach the top-k when fewer than k items remain; it must not score.
    hits = rel_mask.gather(1, top.indices) & (top.values > float("-inf"))
    return hits, rel_mask.sum(dim=1)


def _discounts(k: int, device: torch.device) -> Tensor:
    """``1 / log2(rank + 1)`` for ranks 1..k."""
    ranks = torch.arange(1, k + 1, device=device, dtype=torch.float64)
    return (1.0 / torch.log2(ranks + 1.0)).float()


def _recall_from_hits(hits: Tensor, n_rel: Tensor) -> Tensor:
    # 0/0 -> NaN on purpose: a user with no relevant items has no defined recall and must be dropped
    # by the caller rather than silently counted as 0.
    return hits.sum(dim=1).float() / n_rel.float()


def _ndcg_from_hits(hits: Tensor, n_rel: Tensor) -> Tensor:
    k = hits.shape[1]
    disc = _discounts(k, hits.device)
    dcg = (hits.float() * disc).sum(dim=1)
    # Ideal DCG: all min(|rel|, k) relevant items at the top. Index 0 of the padded cumsum is 0 -> NaN.
    ideal = torch.cat([disc.new_zeros(1), disc.cumsum(0)])
    idcg = ideal[n_rel.clamp(max=k)]
    return dcg / idcg


# --------------------------------------------------------------------------- set metrics


def recall_at_k(scores: Tensor, relevant: Tensor, k: int, pad: int = PAD) -> Tensor:
    """Recall@k per user: ``|topk ∩ rel| / |rel|`` (standard definition, not ``/ min(k, |rel|)``).

    ``relevant`` is ``[U, R]`` item indices padded with ``pad``; duplicates are collapsed to a set, so
    ``|rel|`` counts distinct items. Users with an empty relevant set get NaN (undefined, drop them).
    Note that recall@k < 1 whenever ``|rel| > k``.
    """
    hits, n_rel = _topk_hits(scores, relevant, k, pad)
    return _recall_from_hits(hits, n_rel)


def ndcg_at_k(scores: Tensor, relevant: Tensor, k: int, pad: int = PAD) -> Tensor:
    """Binary-relevance NDCG@k per user.

    ``DCG = sum over hits in the top-k of 1 / log2(rank + 1)`` (rank starting at 1) and
    ``IDCG = sum_{r=1}^{min(|rel|, k)} 1 / log2(r + 1)``. The relevant set is deduplicated as in
    :func:`recall_at_k`; users with an empty relevant set get NaN.
    """
    hits, n_rel = _topk_hits(scores, relevant, k, pad)
    return _ndcg_from_hits(hits, n_rel)


# --------------------------------------------------------------------------- next-item metrics


def _target_rank(scores: Tensor, target: Tensor) -> Tensor:
    """1-based full-ranking rank of ``target`` per user: ``1 + #items with a strictly greater score``.

    Ties are resolved in the target's favour (optimistic). This is deterministic, unlike topk's
    tie order, which is why the next-item metrics are defined through the rank and not through topk.
    """
    _check_scores(scores)
    target = target.to(scores.device)
    if target.dim() != 1 or target.shape[0] != scores.shape[0]:
        raise ValueError(f"target must be [U={scores.shape[0]}], got shape {tuple(target.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer item indices, got {target.dtype}")
    if bool(((target < 0) | (target >= scores.shape[1])).any()):
        raise ValueError(f"target has item indices outside [0, {scores.shape[1]})")
    target_score = scores.gather(1, target.long().unsqueeze(1))
    # A masked or NaN target cannot be ranked meaningfully; this usually means the caller excluded
    # the next item itself (e.g. a repeat of a support item), so fail loudly instead of scoring 0.
    if not bool(torch.isfinite(target_score).all()):
        raise ValueError("target item has a non-finite score (was it removed by mask_seen?)")
    return (scores > target_score).sum(dim=1) + 1


def _hr_from_rank(rank: Tensor, k: int) -> Tensor:
    return (rank <= k).float()


def _next_ndcg_from_rank(rank: Tensor, k: int) -> Tensor:
    # One relevant item, so IDCG = 1 and NDCG is just the discount of the hit (0 outside the top-k).
    gain = 1.0 / torch.log2(rank.double() + 1.0)
    return torch.where(rank <= k, gain, torch.zeros_like(gain)).float()


def hit_rate_at_k(scores: Tensor, target: Tensor, k: int) -> Tensor:
    """HR@k per user: 1 if the next item ranks within the top k, else 0 (ties: see :func:`mrr`)."""
    _check_k(k, scores.shape[-1])
    return _hr_from_rank(_target_rank(scores, target), k)


def next_item_ndcg_at_k(scores: Tensor, target: Tensor, k: int) -> Tensor:
    """Next-item NDCG@k per user: ``1 / log2(rank + 1)`` if ``rank <= k`` else 0 (ties: see :func:`mrr`)."""
    _check_k(k, scores.shape[-1])
    return _next_ndcg_from_rank(_target_rank(scores, target), k)


def mrr(scores: Tensor, target: Tensor) -> Tensor:
    """Reciprocal rank of the next item over the full ranking (mean over users gives MRR).

    ``rank = 1 + #items with a score strictly greater than the target's``, i.e. ties are broken in the
    target's favour. E.g. scores ``[0.5, 0.9, 0.5]`` with target 0 give rank 2 (only item 1 is higher).
    """
    return 1.0 / _target_rank(scores, target).float()


# --------------------------------------------------------------------------- convenience


def ranking_metrics(
    scores: Tensor,
    relevant: Tensor,
    next_item: Tensor,
    ks: Sequence[int] = (10, 20),
    next_ks: Sequence[int] = (10,),
    exclude: Tensor | None = None,
    pad: int = PAD,
) -> dict[str, Tensor]:
    """All per-user metrics in one pass: ``recall@k`` and ``ndcg@k`` for ``ks``, ``hr@k`` and
    ``next_ndcg@k`` for ``next_ks``, and ``mrr``. Defaults give exactly
    ``recall@10, recall@20, ndcg@10, ndcg@20, hr@10, next_ndcg@10, mrr``.

    If ``exclude`` is given it is applied with :func:`mask_seen` first (support items out of the ranking);
    ``pad`` is the padding value of both ``exclude`` and ``relevant``.
    Each value is a float ``Tensor[U]``; average (or bootstrap) over users afterwards.
    """
    if not ks or not next_ks:
        raise ValueError("ks and next_ks must be non-empty")
    if exclude is not None:
        scores = mask_seen(scores, exclude, pad)
    out: dict[str, Tensor] = {}
    # One topk at the largest k; sorted=True makes every smaller top-k a prefix of it.
    hits, n_rel = _topk_hits(scores, relevant, max(ks), pad)
    for k in ks:
        _check_k(k, scores.shape[1])
        out[f"recall@{k}"] = _recall_from_hits(hits[:, :k], n_rel)
    for k in ks:
        out[f"ndcg@{k}"] = _ndcg_from_hits(hits[:, :k], n_rel)
    rank = _target_rank(scores, next_item)
    for k in next_ks:
        _check_k(k, scores.shape[1])
        out[f"hr@{k}"] = _hr_from_rank(rank, k)
        out[f"next_ndcg@{k}"] = _next_ndcg_from_rank(rank, k)
    out["mrr"] = 1.0 / rank.float()
    return out
