"""Hand-computed checks for the full-ranking metrics and the popularity baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarec_dist.metrics.popularity import popularity_scores
from metarec_dist.metrics.ranking import (
    hit_rate_at_k,
    mask_seen,
    mrr,
    ndcg_at_k,
    next_item_ndcg_at_k,
    ranking_metrics,
    recall_at_k,
    topk_items,
)

# Ranking of this row, best first: item 0 (0.9), 2 (0.8), 4 (0.7), 3 (0.3), 5 (0.2), 1 (0.1).
ROW = [0.9, 0.1, 0.8, 0.3, 0.7, 0.2]
IDCG2 = 1.0 + 1.0 / math.log2(3)  # two relevant items at ranks 1 and 2


def _scores(n_users: int = 1) -> torch.Tensor:
    return torch.tensor([ROW] * n_users)


def _approx(t: torch.Tensor, expected: list[float]) -> None:
    assert t.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-7)


# --------------------------------------------------------------------------- top-k / masking


def test_topk_items_order_and_shape() -> None:
    top = topk_items(_scores(2), 3)
    assert top.dtype == torch.long
    assert top.tolist() == [[0, 2, 4], [0, 2, 4]]


@pytest.mark.parametrize("k", [0, 7])
def test_topk_rejects_bad_k(k: int) -> None:
    with pytest.raises(ValueError):
        topk_items(_scores(), k)


def test_mask_seen_sets_minus_inf_and_leaves_input() -> None:
    scores = _scores(2)
    before = scores.clone()
    masked = mask_seen(scores, torch.tensor([[0, -1], [5, 1]]))
    assert torch.equal(scores, before)
    assert masked[0, 0] == float("-inf") and torch.isfinite(masked[0, 1:]).all()
    assert masked[1, 5] == float("-inf") and masked[1, 1] == float("-inf")
    assert torch.isfinite(masked[1, [0, 2, 3, 4]]).all()


def test_mask_seen_custom_pad_and_bad_index() -> None:
    masked = mask_seen(_scores(), torch.tensor([[2, 99]]), pad=99)
    assert torch.isinf(masked[0]).tolist() == [False, False, True, False, False, False]
    with pytest.raises(ValueError):
        mask_seen(_scores(), torch.tensor([[6]]))


# --------------------------------------------------------------------------- recall / ndcg


def test_recall_and_ndcg_hits_at_ranks_1_and_3() -> None:
    rel = torch.tensor([[0, 4]])  # ranks 1 and 3
    _approx(recall_at_k(_scores(), rel, 2), [1 / 2])
    _approx(recall_at_k(_scores(), rel, 3), [2 / 2])
    # DCG@3 = 1/log2(2) + 1/log2(4) = 1.5 ; IDCG = 1 + 1/log2(3).
    _approx(ndcg_at_k(_scores(), rel, 3), [(1 + 1 / math.log2(4)) / IDCG2])
    _approx(ndcg_at_k(_scores(), rel, 2), [1 / IDCG2])


def test_recall_uses_full_relevant_set_size() -> None:
    rel = torch.tensor([[0, 2, 4, 3]])  # 4 relevant, k=2 -> standard recall 2/4, not 2/min(2, 4)
    _approx(recall_at_k(_scores(), rel, 2), [0.5])
    # IDCG is over min(|rel|, k) = 2 items, so a perfect top-2 is NDCG 1.
    _approx(ndcg_at_k(_scores(), rel, 2), [1.0])


def test_hits_deep_in_ranking() -> None:
    rel = torch.tensor([[1, 5]])  # ranks 6 and 5
    _approx(recall_at_k(_scores(), rel, 3), [0.0])
    _approx(ndcg_at_k(_scores(), rel, 6), [(1 / math.log2(6) + 1 / math.log2(7)) / IDCG2])


def test_padding_and_duplicates_ignored() -> None:
    plain = torch.tensor([[0, 4]])
    padded = torch.tensor([[-1, 0, -1, 4, -1]])
    dup = torch.tensor([[0, 0, 4, 4]])
    for rel in (padded, dup):
        assert torch.equal(recall_at_k(_scores(), rel, 3), recall_at_k(_scores(), plain, 3))
        assert torch.equal(ndcg_at_k(_scores(), rel, 3), ndcg_at_k(_scores(), plain, 3))
    custom = torch.tensor([[7, 0, 4, 7]])
    _approx(recall_at_k(_scores(), custom, 2, pad=7), [0.5])


def test_empty_relevant_set_is_nan() -> None:
    rel = torch.tensor([[0, 4], [-1, -1]])
    r = recall_at_k(_scores(2), rel, 3)
    n = ndcg_at_k(_scores(2), rel, 3)
    assert r[0] == 1.0 and torch.isnan(r[1])
    assert torch.isnan(n[1])


def test_excluding_support_items_changes_ranking() -> None:
    rel = torch.tensor([[0, 4]])
    masked = mask_seen(_scores(), torch.tensor([[0]]))  # new order: 2, 4, 3, 5, 1, 0
    _approx(recall_at_k(masked, rel, 3), [0.5])
    _approx(ndcg_at_k(masked, rel, 3), [(1 / math.log2(3)) / IDCG2])
    # Even with k = V the excluded item sits in the top-k at -inf, but must never count as a hit.
    _approx(recall_at_k(masked, rel, 6), [0.5])
    # Excluding a non-relevant item moves relevant item 4 from rank 3 up to rank 2.
    masked2 = mask_seen(_scores(), torch.tensor([[2]]))
    _approx(recall_at_k(masked2, rel, 2), [1.0])
    _approx(ndcg_at_k(masked2, rel, 2), [1.0])


def test_relevant_index_out_of_range_rejected() -> None:
    with pytest.raises(ValueError):
        recall_at_k(_scores(), torch.tensor([[6]]), 3)
    with pytest.raises(ValueError):
        recall_at_k(_scores(), torch.tensor([[0], [1]]), 3)  # wrong number of users


def _reference(scores: torch.Tensor, rel: list[set[int]], k: int) -> tuple[list[float], list[float]]:
    recalls, ndcgs = [], []
    for row, r in zip(scores.tolist(), rel, strict=True):
        order = sorted(range(len(row)), key=lambda i: -row[i])[:k]
        hits = [i in r for i in order]
        dcg = sum(1 / math.log2(j + 2) for j, h in enumerate(hits) if h)
        idcg = sum(1 / math.log2(j + 2) for j in range(min(len(r), k)))
        recalls.append(sum(hits) / len(r))
        ndcgs.append(dcg / idcg)
    return recalls, ndcgs


def test_vectorised_matches_per_user_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(32, 50, generator=gen)
    rel = torch.randint(0, 50, (32, 8), generator=gen)
    rel[torch.rand(32, 8, generator=gen) < 0.3] = -1
    rel[:, 0] = torch.arange(32)  # at least one relevant item per user
    sets = [{i for i in row if i >= 0} for row in rel.tolist()]
    for k in (1, 5, 10):
        rec, nd = _reference(scores, sets, k)
        _approx(recall_at_k(scores, rel, k), rec)
        _approx(ndcg_at_k(scores, rel, k), nd)


# --------------------------------------------------------------------------- next-item metrics


def test_next_item_metrics() -> None:
    target = torch.tensor([4, 0, 1])  # ranks 3, 1, 6
    s = _scores(3)
    _approx(hit_rate_at_k(s, target, 2), [0.0, 1.0, 0.0])
    _approx(hit_rate_at_k(s, target, 3), [1.0, 1.0, 0.0])
    _approx(next_item_ndcg_at_k(s, target, 3), [1 / math.log2(4), 1.0, 0.0])
    _approx(mrr(s, target), [1 / 3, 1.0, 1 / 6])


def test_mrr_ties_count_only_strictly_greater() -> None:
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.5], [0.5, 0.9, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]])
    target = torch.tensor([2, 0, 3])
    # rows 0/1: only item 1 scores higher -> rank 2; row 2: all tied -> rank 1.
    _approx(mrr(scores, target), [0.5, 0.5, 1.0])
    _approx(hit_rate_at_k(scores, target, 1), [0.0, 0.0, 1.0])
    _approx(next_item_ndcg_at_k(scores, target, 2), [1 / math.log2(3), 1 / math.log2(3), 1.0])


def test_next_item_with_excluded_items() -> None:
    masked = mask_seen(_scores(), torch.tensor([[0, 2]]))
    _approx(mrr(masked, torch.tensor([4])), [1.0])  # rank 3 -> 1 once items 0 and 2 are excluded
    with pytest.raises(ValueError):
        mrr(masked, torch.tensor([0]))  # the target itself was excluded


def test_next_item_bad_target() -> None:
    with pytest.raises(ValueError):
        mrr(_scores(), torch.tensor([6]))
    with pytest.raises(ValueError):
        mrr(_scores(2), torch.tensor([1]))


# --------------------------------------------------------------------------- convenience


def test_ranking_metrics_keys_and_values() -> None:
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(8, 40, generator=gen)
    rel = torch.randint(0, 40, (8, 10), generator=gen)
    nxt = rel[:, 0].clone()
    out = ranking_metrics(scores, rel, nxt)
    assert list(out) == ["recall@10", "recall@20", "ndcg@10", "ndcg@20", "hr@10", "next_ndcg@10", "mrr"]
    for k in (10, 20):
        assert torch.allclose(out[f"recall@{k}"], recall_at_k(scores, rel, k))
        assert torch.allclose(out[f"ndcg@{k}"], ndcg_at_k(scores, rel, k))
    assert torch.allclose(out["hr@10"], hit_rate_at_k(scores, nxt, 10))
    assert torch.allclose(out["next_ndcg@10"], next_item_ndcg_at_k(scores, nxt, 10))
    assert torch.allclose(out["mrr"], mrr(scores, nxt))
    assert all(v.shape == (8,) for v in out.values())


def test_ranking_metrics_applies_exclude() -> None:
    rel, nxt, excl = torch.tensor([[0, 4]]), torch.tensor([4]), torch.tensor([[2]])
    out = ranking_metrics(_scores(), rel, nxt, ks=(2,), next_ks=(1,), exclude=excl)
    _approx(out["recall@2"], [1.0])
    _approx(out["hr@1"], [0.0])
    _approx(out["mrr"], [0.5])


# --------------------------------------------------------------------------- popularity


def test_popularity_counts_only_given_sequences() -> None:
    train = [np.array([1, 2, 2, 0, 0]), np.array([3, 2])]
    pop = popularity_scores(train, num_items=5)
    assert pop.shape == (6,)
    assert pop[0] == float("-inf")  # padding never recommended
    assert pop[1:].tolist() == [1.0, 3.0, 1.0, 0.0, 0.0]
    # Item 5 is only consumed by a (held-out) test user, so it must score 0.
    assert pop[5] == 0.0


def test_popularity_empty_and_bad_ids() -> None:
    pop = popularity_scores([], num_items=3)
    assert pop[1:].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        popularity_scores([np.array([4])], num_items=3)
    with pytest.raises(ValueError):
        popularity_scores([np.array([-1])], num_items=3)


def test_ties_never_help_the_set_metrics_and_favour_the_next_item() -> None:
    # Item 2 ties with items 0 and 1 at the top. Set metrics: a relevant item ranks after the non-relevant
    # items it ties with (rank 3), so recall@1 = 0; the next-item rank counts only higher scores (rank 1).
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.1]])
    out = ranking_metrics(scores, torch.tensor([[2]]), torch.tensor([2]), ks=(1, 3), next_ks=(1,))
    _approx(out["recall@1"], [0.0])
    _approx(out["ndcg@3"], [1 / math.log2(4)])
    _approx(out["hr@1"], [1.0])
    _approx(out["mrr"], [1.0])
    # Tied relevant items 1 and 2 take the last two positions of the tie group, 2 and 3.
    _approx(ndcg_at_k(scores, torch.tensor([[2, 1]]), 3), [(1 / math.log2(3) + 1 / math.log2(4)) / IDCG2])
    # A model scoring every item alike earns nothing from the tie.
    _approx(recall_at_k(torch.zeros(1, 50), torch.tensor([[3, 7]]), 10), [0.0])
