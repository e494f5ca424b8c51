"""Most-popular baseline scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["popularity_scores"]


def popularity_scores(train_sequences: Sequence[np.ndarray], num_items: int) -> torch.Tensor:
    """Interaction counts per item id, as a float32 ``Tensor[num_items + 1]``.

    **Pass sequences of TRAINING users only.** Counting the cold-start test users' interactions (their
    support or query items) would leak the evaluation targets into the baseline and inflate it.

    Item ids are ``1..num_items``; id 0 is padding: padding entries in the sequences are ignored and
    index 0 gets ``-inf`` so it can never be recommended. Items never seen in training score 0.
    For a ``[U, V]`` score matrix over ids ``1..num_items`` use ``scores[1:].expand(U, -1)``.
    """
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}")
    parts = [np.asarray(seq).ravel() for seq in train_sequences]
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"item ids must be integers, got {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)
    if ids.size and (ids.min() < 0 or ids.max() > num_items):
        raise ValueError(f"item ids must be in [0, {num_items}] (0 = padding)")
    counts = np.bincount(ids, minlength=num_items + 1).astype(np.float32)
    scores = torch.from_numpy(counts)
    scores[0] = float("-inf")
    return scores
