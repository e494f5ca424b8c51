"""A small synthetic interaction log with planted per-user structure.

Why: tests and the offline smoke run need data that (a) needs no download and (b) rewards
per-user adaptation, so that "adaptation helps" is a claim a test can check.

Structure: items fall into ``num_groups`` taste groups (item i belongs to group i % num_groups).
Every user has one preferred group; each interaction is drawn from that group with probability
``in_group_prob`` and otherwise from a Zipf-like global popularity. A user's first few items
reveal their group, which is exactly what a few inner-loop steps on the support can pick up.
"""

from __future__ import annotations

import numpy as np


def make_synthetic_sequences(
    num_users: int = 400,
    num_items: int = 200,
    num_groups: int = 8,
    min_len: int = 12,
    max_len: int = 40,
    in_group_prob: float = 0.8,
    seed: int = 0,
) -> list[np.ndarray]:
    """Per-user chronological item sequences; item ids are 1..num_items (0 is padding)."""
    if num_groups < 1 or num_items < num_groups:
        raise ValueError("synthetic data: need 1 <= num_groups <= num_items")
    if not 1 <= min_len <= max_len:
        raise ValueError("synthetic data: need 1 <= min_len <= max_len")
    rng = np.random.default_rng(seed)
    items = np.arange(1, num_items + 1)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
    popularity /= popularity.sum()
    groups = [items[(items - 1) % num_groups == g] for g in range(num_groups)]
    sequences = []
    for _ in range(num_users):
        group = groups[rng.integers(num_groups)]
        length = int(rng.integers(min_len, max_len + 1))
        in_group = rng.random(length) < in_group_prob
        seq = np.where(
            in_group,
            rng.choice(group, size=length),
            rng.choice(items, size=length, p=popularity),
        )
        sequences.append(seq.astype(np.int64))
    return sequences
