"""Scorers with scores fixed by hand, for protocol tests whose metrics are worked out on paper."""

from __future__ import annotations

import numpy as np
import torch

from metarec_dist.eval.cold_start import PerUser
from metarec_dist.tasks.types import MetaBatch


class TableScorer:
    """Fixed scores per user, looked up by the items the model is shown (padding and BOS left out): score
    column j is item j + 1 of ``num_items``, unlisted items score -5. Records every input it sees."""

    def __init__(self, table: dict[tuple[int, ...], dict[int, float]], num_items: int) -> None:
        self.table, self.num_items, self.seen = table, num_items, []

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        bos = self.num_items + 1
        rows = []
        for ids in batch.item_ids.tolist():
            shown = tuple(i for i in ids if i not in (0, bos))
            self.seen.append(shown)
            row = torch.full((self.num_items,), -5.0)
            for item, s in self.table.get(shown, {}).items():
                row[item - 1] = s
            rows.append(row)
        return torch.stack(rows)


def assert_same_per_user(a: PerUser, b: PerUser) -> None:
    """Two per-user results are equal: the same shots, metrics and every user's value bit for bit."""
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].keys() == b[k].keys()
        for name in a[k]:
            np.testing.assert_array_equal(a[k][name], b[k][name], err_msg=f"K={k} {name}")
