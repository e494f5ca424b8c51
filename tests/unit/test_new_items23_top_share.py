"""``TopShare`` (the mixed protocol's share of new items in the top 10) sorts only the columns that can
reach a row's top k (``top_candidates``) instead of every item: its kept top k (values, "is new", order)
and its results equal those of the full sorts it did before, bit for bit, on ties, excluded items, several
chunks, short rows and NaN."""

from __future__ import annotations

import pytest
import torch

from metarec_dist.eval.new_items import TopShare, top_candidates
from metarec_dist.metrics.ranking import PAD


class FullSort(TopShare):
    """TopShare as it was: both stable sorts over every column."""

    @staticmethod
    def candidates(scores: torch.Tensor, new: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return scores, new


def _feed(share: TopShare, scores: torch.Tensor, chunk: int) -> TopShare:
    read = share.watch(lambda lo, hi: scores[:, lo:hi])
    for lo in range(0, scores.shape[1], chunk):
        read(lo, min(lo + chunk, scores.shape[1]))
    return share


def _scores(users: int, items: int, levels: int, seed: int) -> torch.Tensor:
    """Few distinct values (``levels``): many exact ties, across old and new items."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (users, items), generator=g).float() / 4


@pytest.mark.parametrize("levels", [3, 40, 10_000])
@pytest.mark.parametrize("chunk", [7, 64, 1000])
@pytest.mark.parametrize("k", [1, 10])
def test_top_share_equals_the_full_sort(levels, chunk, k):
    users, items = 12, 300
    g = torch.Generator().manual_seed(levels + chunk)
    is_new = torch.rand(items, generator=g) < 0.4
    exclude = torch.randint(0, items, (users, 5), generator=g)
    exclude[::3, 2:] = PAD
    scores = _scores(users, items, levels, seed=chunk)
    scores[0, :] = 1.0  # a row that ties everywhere: nothing can be dropped
    scores[1, : items - 3] = float("-inf")  # fewer finite items than k + excluded ones
    want = _feed(FullSort(is_new, exclude, k), scores, chunk)
    got = _feed(TopShare(is_new, exclude, k), scores, chunk)
    assert torch.equal(got.values, want.values) and torch.equal(got.new, want.new)
    for name, value in want.result().items():
        assert torch.equal(got.result()[name], value), name


def test_top_candidates_keep_the_top_k_and_leave_unsortable_input_alone():
    scores = torch.tensor([[0.0, 3.0, 1.0, 3.0, 2.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    new = torch.tensor([[True, False, True, True, False]] * 2)
    top, top_new = top_candidates(scores, new, 2)
    assert top.tolist() == [[3.0, 3.0], [5.0, 4.0]] and top_new.tolist() == [[False, True], [True, False]]
    top, top_new = top_candidates(torch.tensor([[3.0, 1.0, 1.0, 0.0], [4.0, 3.0, 2.0, 0.0]]), new[:, :4], 2)
    assert top.tolist() == [
        [3.0, 1.0, 1.0],
        [4.0, 3.0, float("-inf")],
    ]  # a tie: 3 candidates, the other padded
    assert top_new.tolist() == [[True, False, True], [True, False, True]]  # the padding: new
    tied = torch.tensor([[3.0, 1.0, 1.0, 1.0], [4.0, 3.0, 2.0, 0.0]])
    assert top_candidates(tied, new[:, :4], 2)[0] is tied  # a row keeps every column: nothing to drop
    nan = torch.tensor([[float("nan"), 1.0, 2.0, 0.0]])
    assert top_candidates(nan, new[:1, :4], 2)[0] is nan  # NaN: the full sort decides
    short = torch.tensor([[1.0, 2.0]])
    assert top_candidates(short, new[:1, :2], 2)[0] is short


def test_top_share_sorts_only_the_candidates(monkeypatch):
    """Without ties the sorts see about k columns, not the chunk's (they sorted all 300 before)."""
    widths = []
    sort = torch.sort

    def recorded(t, *args, **kwargs):
        widths.append(t.shape[-1])
        return sort(t, *args, **kwargs)

    monkeypatch.setattr(torch, "sort", recorded)
    is_new = torch.arange(300) % 3 == 0
    _feed(TopShare(is_new, torch.full((4, 1), PAD), 10), _scores(4, 300, 10_000, seed=1), 300)
    assert widths and max(widths) < 20
