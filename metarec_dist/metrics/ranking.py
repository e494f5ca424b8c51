"""Full-ranking metrics for cold-start evaluation.

Every metric ranks *all* items (no sampled negatives: sampled metrics are known to disagree with the
full ranking). Inputs are a score matrix ``scores[U, V]`` whose columns are item indices ``0..V-1``; the
caller maps dataset ids to columns. Everything is vectorised over users.

Two kinds of ground truth:

* set metrics (``recall_at_k``, ``ndcg_at_k``): ``relevant[U, R]``, the user's next interactions, padded
  with ``pad`` (default -1). Duplicates are collapsed, so the relevant *set* is used.
* next-item metrics (``hit_rate_at_k``, ``next_item_ndcg_at_k``, ``mrr``): ``target[U]``, one item each.

Items removed with :func:`mask_seen` (e.g. the support set) score ``-inf`` and never count as a hit.

Ties, made deterministic (``torch.topk`` returns tied items in no specified order):

* next-item metrics count the items with a *strictly greater* score: ties are broken in the target's
  favour (``rank = 1 + #higher``), as they always were;
* set metrics put a relevant item *after* every non-relevant item it ties with: ``rank = #items scoring at
  least as high - #tied relevant items later in the relevant list``, so tied relevant items take the last
  positions of their tie group (which of them comes first changes no metric). Ties never help: a model that
  scores every item alike, or a popularity list whose unseen items all tie at 0, earns no set-metric hits
  from the tie. This is one of the orders ``torch.topk`` may return.

NaN scores are refused: a NaN has no rank.

Because only counts are needed, the metrics stream: :class:`ChunkedRanking` takes the scores as column
chunks ``[U, hi - lo]`` and never holds ``[U, V]`` (a million-item catalogue at 256 users would be 1 GB).
It reads the scores of the relevant/next items in a first pass and counts the higher-scoring items in a
second one (one pass when a single chunk covers the catalogue). :func:`ranking_metrics` is the same code on a
whole matrix, so the chunked metrics equal the full ones exactly for any chunk size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

PAD = -1
DEFAULT_ITEM_CHUNK = 65536

ScoreRange = Callable[[int, int], Tensor]
"""``score_range(lo, hi)``: scores ``[U, hi - lo]`` of items (columns) ``lo..hi-1`` for every user."""
ScoreSink = Callable[[ScoreRange], None]
"""What a chunked scorer hands its ``ScoreRange`` to (e.g. :meth:`ChunkedRanking.run`)."""

__all__ = [
    "DEFAULT_ITEM_CHUNK",
    "PAD",
    "ChunkedRanking",
    "ScoreRange",
    "ScoreSink",
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
    return _check_indices(idx, scores.shape[0], scores.shape[1], pad, name)


def _check_indices(idx: Tensor, num_users: int, num_items: int, pad: int, name: str) -> Tensor:
    if idx.dim() != 2 or idx.shape[0] != num_users:
        raise ValueError(f"{name} must be [U={num_users}, M], got shape {tuple(idx.shape)}")
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer item indices, got {idx.dtype}")
    valid = idx != pad
    bad = valid & ((idx < 0) | (idx >= num_items))
    if bool(bad.any()):
        raise ValueError(f"{name} has item indices outside [0, {num_items}) that are not pad={pad}")
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
    _check_index_matrix(relevant.to(scores.device), scores, pad, "relevant")
    ranking = ChunkedRanking(scores.shape[1], relevant, ks=(k,), pad=pad, item_chunk=scores.shape[1])
    ranking.run(lambda lo, hi: scores[:, lo:hi])
    return ranking.hits(k), ranking.num_relevant()


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


# --------------------------------------------------------------------------- streaming ranks


class ChunkedRanking:
    """All ranking metrics of ``U`` users from score chunks, in memory bounded by ``U x item_chunk``.

    ``relevant [U, R]`` (padded with ``pad``), ``next_item [U]`` (None: no next-item metrics) and ``exclude
    [U, M]`` are item columns as in :func:`ranking_metrics`. :meth:`run` pulls the chunks from a
    ``score_range(lo, hi)``; :meth:`result` then gives exactly what :func:`ranking_metrics` gives on the
    whole matrix. Pass 1 reads the scores of the ``R + 1`` ground-truth items, pass 2 counts, per
    ground-truth item, the items ranked ahead of it (see the tie rules above); with one chunk both use one
    read.
    """

    def __init__(
        self,
        num_items: int,
        relevant: Tensor,
        next_item: Tensor | None = None,
        ks: Sequence[int] = (10, 20),
        next_ks: Sequence[int] = (10,),
        exclude: Tensor | None = None,
        pad: int = PAD,
        item_chunk: int = DEFAULT_ITEM_CHUNK,
    ) -> None:
        if not ks or (next_item is not None and not next_ks):
            raise ValueError("ks and next_ks must be non-empty")
        if item_chunk < 1:
            raise ValueError(f"item_chunk must be a positive number of items, got {item_chunk}")
        for k in (*ks, *(next_ks if next_item is not None else ())):
            _check_k(k, num_items)
        if relevant.dim() != 2:
            raise ValueError(f"relevant must be [U, R], got shape {tuple(relevant.shape)}")
        self.num_items, self.num_users, self.item_chunk = num_items, relevant.shape[0], item_chunk
        self.ks, self.next_ks = tuple(ks), tuple(next_ks)
        valid = _check_indices(relevant, self.num_users, num_items, pad, "relevant")
        # The relevant *set*: a repeated item counts once (its first column).
        same = (relevant[:, :, None] == relevant[:, None, :]) & valid[:, None, :]
        earlier = torch.ones(same.shape[1:], dtype=torch.bool, device=same.device).tril(-1)
        self.rel_valid = valid & ~(same & earlier).any(dim=2)
        targets = [torch.where(valid, relevant, torch.zeros_like(relevant)).long()]
        self.has_next = next_item is not None
        if next_item is not None:
            _check_target(next_item, self.num_users, num_items)
            targets.append(next_item.long().to(relevant.device)[:, None])
        self.targets = torch.cat(targets, dim=1)  # [U, T]: relevant columns, then the next item
        self.target_valid = torch.cat(
            [self.rel_valid, torch.ones_like(self.targets[:, valid.shape[1] :], dtype=torch.bool)], 1
        )
        self.exclude, self.exclude_valid = None, None
        if exclude is not None:
            self.exclude_valid = _check_indices(exclude, self.num_users, num_items, pad, "exclude")
            self.exclude = exclude.long()
        self.target_score: Tensor | None = None  # [U, T], filled by pass 1
        self.higher: Tensor | None = None  # [U, T]: relevant: items scoring >=; next: >. Pass 2.

    # ----------------------------------------------------------------- streaming

    def run(self, score_range: ScoreRange) -> None:
        """Reads every chunk (twice when there are several): the whole of the work. Once per object."""
        if self.target_score is not None:
            raise RuntimeError("ChunkedRanking.run was called twice (the counts would add up)")
        step = self.item_chunk
        ranges = [(lo, min(lo + step, self.num_items)) for lo in range(0, self.num_items, step)]
        if len(ranges) == 1:
            scores = self._read(score_range, 0, self.num_items)
            self._gather(scores, 0)
            self._count(scores)
            return
        for lo, hi in ranges:
            self._gather(self._read(score_range, lo, hi), lo)
        for lo, hi in ranges:
            self._count(self._read(score_range, lo, hi))

    def _read(self, score_range: ScoreRange, lo: int, hi: int) -> Tensor:
        scores = score_range(lo, hi)
        if tuple(scores.shape) != (self.num_users, hi - lo):
            raise ValueError(
                f"scores of items {lo}..{hi - 1} must be [U={self.num_users}, {hi - lo}], got "
                f"{tuple(scores.shape)}"
            )
        _check_scores(scores)
        if bool(torch.isnan(scores).any()):
            raise ValueError("scores contain NaN: a NaN has no rank (did the model diverge?)")
        if self.exclude is None:
            return scores
        # Excluded items (the support) score -inf, as mask_seen does on a whole matrix.
        ex, ok = self.exclude.to(scores.device), self.exclude_valid.to(scores.device)
        inside = ok & (ex >= lo) & (ex < hi)
        routed = torch.where(inside, ex - lo, torch.full_like(ex, hi - lo))
        mask = torch.zeros(self.num_users, hi - lo + 1, dtype=torch.bool, device=scores.device)
        mask.scatter_(1, routed, True)
        return scores.masked_fill(mask[:, : hi - lo], float("-inf"))

    def _gather(self, scores: Tensor, lo: int) -> None:
        targets, ok = self.targets.to(scores.device), self.target_valid.to(scores.device)
        if self.target_score is None:
            self.target_score = torch.full(
                targets.shape, float("-inf"), dtype=scores.dtype, device=scores.device
            )
        inside = ok & (targets >= lo) & (targets < lo + scores.shape[1])
        got = scores.gather(1, torch.where(inside, targets - lo, torch.zeros_like(targets)))
        self.target_score = torch.where(inside, got, self.target_score)

    def _count(self, scores: Tensor) -> None:
        assert self.target_score is not None
        if self.higher is None:
            if self.has_next and not bool(torch.isfinite(self.target_score[:, -1]).all()):
                # Usually the caller excluded the next item itself (a repeat of a support item).
                raise ValueError("target item has a non-finite score (was it removed by mask_seen?)")
            self.higher = torch.zeros(self.target_score.shape, dtype=torch.long, device=scores.device)
        # One [U, chunk] comparison per ground-truth item keeps the temporaries at the chunk's size. Summing
        # the comparison as bytes is several times faster than summing bools on CPU. Relevant items count
        # the items scoring at least as high (ties go first), the next item only the strictly higher ones.
        above = torch.empty(scores.shape, dtype=torch.bool, device=scores.device)
        num_relevant = self.rel_valid.shape[1]
        for t in range(self.targets.shape[1]):
            compare = torch.ge if t < num_relevant else torch.gt
            compare(scores, self.target_score[:, t : t + 1], out=above)
            self.higher[:, t] += above.view(torch.uint8).sum(dim=1, dtype=torch.int32)

    # ----------------------------------------------------------------- results

    def _finished(self) -> tuple[Tensor, Tensor]:
        if self.higher is None or self.target_score is None:
            raise RuntimeError("ChunkedRanking.run has not been called")
        return self.higher.cpu(), self.target_score.cpu()

    def num_relevant(self) -> Tensor:
        """Distinct relevant items per user ``[U]`` (excluded ones included, as in ``mask_seen``)."""
        return self.rel_valid.cpu().sum(dim=1)

    def hits(self, k: int) -> Tensor:
        """``bool[U, k]``: position ``p`` is True when a relevant item ranks ``p + 1``."""
        higher, score = self._finished()
        r = self.rel_valid.shape[1]
        higher, score, ok = higher[:, :r], score[:, :r], self.rel_valid.cpu()
        # ``higher`` counts the items scoring >= (the item itself and its whole tie group); tied relevant
        # items take the group's last positions, in relevant-list order.
        tied = (score[:, None, :] == score[:, :, None]) & ok[:, None, :]
        after = torch.ones(r, r, dtype=torch.bool).triu(1)
        rank = higher - (tied & after).sum(dim=2)
        # An excluded (-inf) item only reaches the top k when fewer than k items remain; it never scores.
        hit = ok & (score > float("-inf")) & (rank <= k)
        pos = torch.where(hit, rank - 1, torch.full_like(rank, k))
        out = torch.zeros(self.num_users, k + 1, dtype=torch.bool)
        return out.scatter_(1, pos, True)[:, :k]

    def next_rank(self) -> Tensor:
        """1-based rank of the next item ``[U]`` (ties in its favour), as ``mrr`` defines it."""
        if not self.has_next:
            raise ValueError("no next_item was given")
        return self._finished()[0][:, -1] + 1

    def result(self) -> dict[str, Tensor]:
        """The metrics of :func:`ranking_metrics`, per user, on the CPU."""
        out: dict[str, Tensor] = {}
        hits, n_rel = self.hits(max(self.ks)), self.num_relevant()
        for k in self.ks:
            out[f"recall@{k}"] = _recall_from_hits(hits[:, :k], n_rel)
        for k in self.ks:
            out[f"ndcg@{k}"] = _ndcg_from_hits(hits[:, :k], n_rel)
        if self.has_next:
            rank = self.next_rank()
            for k in self.next_ks:
                out[f"hr@{k}"] = _hr_from_rank(rank, k)
                out[f"next_ndcg@{k}"] = _next_ndcg_from_rank(rank, k)
            out["mrr"] = 1.0 / rank.float()
        return out


# --------------------------------------------------------------------------- next-item metrics


def _check_target(target: Tensor, num_users: int, num_items: int) -> None:
    if target.dim() != 1 or target.shape[0] != num_users:
        raise ValueError(f"target must be [U={num_users}], got shape {tuple(target.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer item indices, got {target.dtype}")
    if bool(((target < 0) | (target >= num_items)).any()):
        raise ValueError(f"target has item indices outside [0, {num_items})")


def _target_rank(scores: Tensor, target: Tensor) -> Tensor:
    """1-based full-ranking rank of ``target`` per user: ``1 + #items with a strictly greater score``.

    Ties are resolved in the target's favour (optimistic). This is deterministic, unlike topk's
    tie order, which is why the next-item metrics are defined through the rank and not through topk.
    """
    _check_scores(scores)
    target = target.to(scores.device)
    _check_target(target, scores.shape[0], scores.shape[1])
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
    _check_scores(scores)
    _check_index_matrix(relevant.to(scores.device), scores, pad, "relevant")
    ranking = ChunkedRanking(
        scores.shape[1], relevant, next_item, ks, next_ks, exclude, pad, item_chunk=max(1, scores.shape[1])
    )
    ranking.run(lambda lo, hi: scores[:, lo:hi])
    return ranking.result()
