"""The seam between data and learning: a collated meta-batch of cold-start tasks.

Layout of one task row (left-padded so that every task's query sits at the same positions, which lets the
inner and outer losses use plain slices instead of per-task gathers)::

    positions: 0 ...            Kmax-K   Kmax-K+1 ... Kmax   Kmax+1 ... Kmax+Q
    item_ids:  pad ... pad      BOS      s_1      ... s_K    q_1    ... q_Q

The hidden state at position p predicts the item at p + 1, so positions ``[0, Kmax)`` carry the support
targets (BOS predicts s_1, ..., s_{K-1} predicts s_K) and positions ``[Kmax, Kmax + Q)`` the query targets
(s_K predicts q_1, ...). A BOS token makes even a 1-item support give one training pair to adapt on.

With user features (``user_features``) the model reads one more token, the user's, before the row
(``models/recommender.py``, ``encode``) and drops its output: the layout above is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


def bos_id(num_items: int) -> int:
    """The begin-of-user token: embedding row 0 is padding, rows 1..V the items, row V+1 BOS."""
    return num_items + 1


@dataclass
class MetaBatch:
    item_ids: torch.Tensor  # [T, L] long, L = 1 + Kmax + Q
    attention_mask: torch.Tensor  # [T, L] long, 0 on left padding
    support_targets: torch.Tensor  # [T, Kmax] item ids, 0 = no target
    query_targets: torch.Tensor  # [T, Q] item ids, 0 = no target
    task_ids: torch.Tensor  # [T] long, position in the global task stream
    negatives: torch.Tensor | None = None  # [S] shared negatives for sampled softmax
    # [T, F] the user's feature ids (data.features.user_matrix rows), for the model's user token; None
    # without user features.
    user_features: torch.Tensor | None = None

    @property
    def num_tasks(self) -> int:
        return self.item_ids.shape[0]

    @property
    def support_len(self) -> int:
        return self.support_targets.shape[1]

    def to(self, device: torch.device | str) -> MetaBatch:
        return MetaBatch(**{f.name: _to(getattr(self, f.name), device) for f in fields(self)})

    def slice(self, lo: int, hi: int) -> MetaBatch:
        """Tasks ``lo:hi`` (a rank's or an accumulation step's share); shared negatives stay shared."""
        parts = {f.name: getattr(self, f.name) for f in fields(self)}
        return MetaBatch(**{k: v if k == "negatives" or v is None else v[lo:hi] for k, v in parts.items()})


def _to(value: torch.Tensor | None, device: torch.device | str) -> torch.Tensor | None:
    return None if value is None else value.to(device, non_blocking=True)
