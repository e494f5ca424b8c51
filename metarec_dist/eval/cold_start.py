"""Cold-start evaluation: adapt on each held-out user's first K items, rank ALL items, score the next ones.

Full ranking only (no sampled negatives): sampled metrics are several times higher and do not rank models
reliably. Support items are removed from the ranking and from the relevant set (they were already seen);
the relevant set is the user's next ``num_relevant`` interactions after the support.

Per-user metric arrays are the unit everything is built from: the same users in the same order for every
scorer (a user is kept iff it has an unseen item after its first K), so paired bootstrap intervals and seed
averages are plain array arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from metarec_dist.metrics.ranking import PAD, ranking_metrics
from metarec_dist.tasks.sampler import prefix_batch
from metarec_dist.tasks.types import MetaBatch, bos_id

PerUser = dict[int, dict[str, np.ndarray]]  # shots K -> metric -> one value per evaluated user


def eval_targets(
    sequences: list[np.ndarray], shots: int, num_relevant: int
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """For users with at least one unseen item after their first ``shots``: kept user indices, support
    ``[U, shots]``, relevant ``[U, num_relevant]`` and next item ``[U]`` (all as 0-based score columns,
    PAD where absent)."""
    keep, support, relevant, nxt = [], [], [], []
    for u, seq in enumerate(sequences):
        if len(seq) <= shots:
            continue
        seen = set(seq[:shots].tolist())
        future = list(dict.fromkeys(int(i) for i in seq[shots : shots + num_relevant] if i not in seen))
        if not future:
            continue
        keep.append(u)
        support.append(seq[:shots] - 1)
        relevant.append([i - 1 for i in future] + [PAD] * (num_relevant - len(future)))
        nxt.append(future[0] - 1)
    if not keep:
        return (
            [],
            np.zeros((0, shots), np.int64),
            np.zeros((0, num_relevant), np.int64),
            np.zeros(0, np.int64),
        )
    return keep, np.stack(support).astype(np.int64), np.array(relevant, np.int64), np.array(nxt, np.int64)


class Scorer(Protocol):
    """Ranks every item for a batch of users (RecBole's ``full_sort_predict``): a training engine, the
    meta-learner, or a baseline."""

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        """Scores ``[U, V]`` after ``steps`` inner steps on each user's support (None: the algorithm's)."""
        ...


@torch.no_grad()
def evaluate_cold_start(
    scorer: Scorer,
    num_items: int,
    sequences: list[np.ndarray],
    shots: Sequence[int],
    support_max: int,
    num_relevant: int = 10,
    ks: Sequence[int] = (10, 20),
    steps: int | None = None,
    batch_users: int = 256,
    device: torch.device | str = "cpu",
) -> PerUser:
    """Per shot count K, per metric, one value per evaluated user. Under ZeRO-3 every rank must call this
    with the same users (scoring is a collective forward)."""
    results: PerUser = {}
    for k in shots:
        if k > support_max:
            raise ValueError(f"eval.shots: {k} exceeds tasks.support_max ({support_max})")
        keep, support, relevant, nxt = eval_targets(sequences, k, num_relevant)
        parts: dict[str, list[np.ndarray]] = {}
        for lo in range(0, len(keep), batch_users):
            idx = keep[lo : lo + batch_users]
            batch = prefix_batch([sequences[u] for u in idx], k, support_max, bos_id(num_items)).to(device)
            sl = slice(lo, lo + len(idx))
            m = ranking_metrics(
                scorer.score(batch, steps).float().cpu(),
                torch.from_numpy(relevant[sl]),
                torch.from_numpy(nxt[sl]),
                ks=tuple(ks),
                exclude=torch.from_numpy(support[sl]),
            )
            for name, v in m.items():
                parts.setdefault(name, []).append(v.cpu().numpy())
        results[k] = {name: np.concatenate(v) for name, v in parts.items()}
    return results


def flat_means(results: PerUser) -> dict[str, float]:
    """Means over users under flat keys for logging: ``ndcg@10@k3`` etc."""
    return {
        f"{name}@k{k}": float(v.mean()) for k, res in results.items() for name, v in res.items() if len(v)
    }
