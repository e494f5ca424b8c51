"""Warm leave-one-out evaluation (SASRec / S3-Rec / ICLRec): each sequence's LAST item is its target, the
items before it are the history; the model reads the most recent ``window`` of them and ranks ALL items.

Full ranking, no sampled negatives. With ``mask_seen`` (the default, as in the S3-Rec and ICLRec code: they
set the scores of every item of the user's earlier history to 0 before taking the top k) the history's items
are removed from the ranking; a target that repeats a history item then counts as a miss, as it does there.
HR@k and NDCG@k are the one-relevant-item cases of ``ranking_metrics``' Recall@k and NDCG@k (a target tied
with other items ranks after them: ties never count as a hit); MRR uses the target's rank. Items are scored
``eval.item_chunk`` at a time, as in the cold-start evaluation (bounded memory, same metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from metarec_dist.eval.cold_start import PerUser, RankedBatches, Scorer
from metarec_dist.metrics.ranking import DEFAULT_ITEM_CHUNK, PAD, ChunkedRanking, ScoreRange
from metarec_dist.tasks.sampler import prefix_batch
from metarec_dist.tasks.types import MetaBatch, bos_id

LOO = 0  # the per-user result key (in place of a shot count K): the whole history is the input
LOO_KS = (5, 10, 20)  # the published full-ranking tables report HR and NDCG at these cut-offs


def loo_inputs(sequences: list[np.ndarray], window: int) -> tuple[list[int], list[np.ndarray], np.ndarray]:
    """Kept sequence indices (at least one history item), the model's input (the last ``window`` history
    items) and the 0-based target column of each."""
    keep = [u for u, s in enumerate(sequences) if len(s) >= 2]
    inputs = [sequences[u][:-1][-window:] for u in keep]
    targets = np.array([int(sequences[u][-1]) - 1 for u in keep], dtype=np.int64)
    return keep, inputs, targets


def seen_matrix(histories: list[np.ndarray], targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``[U, M]`` 0-based history items to drop from the ranking (PAD-padded), the target itself left in so
    that it can be ranked, and ``[U]`` whether the target repeats a history item (counted as a miss)."""
    width = max((len(h) for h in histories), default=0)
    seen = np.full((len(histories), max(width, 1)), PAD, dtype=np.int64)
    repeat = np.zeros(len(histories), dtype=bool)
    for i, (h, t) in enumerate(zip(histories, targets, strict=True)):
        cols = h.astype(np.int64) - 1
        repeat[i] = bool((cols == t).any())
        seen[i, : len(cols)] = np.where(cols == t, PAD, cols)
    return torch.from_numpy(seen), torch.from_numpy(repeat)


class LooRanking:
    """A batch's ranking of each target (``ChunkedRanking``, the target its one relevant item and its next
    item) with leave-one-out's names: ``hr@k`` / ``ndcg@k`` for ``ks`` and ``mrr``; a target that repeats a
    history item (``repeat``, with ``mask_seen``) scores 0 on all of them."""

    def __init__(self, ranking: ChunkedRanking, ks: Sequence[int], repeat: torch.Tensor) -> None:
        self.inner, self.ks, self.repeat = ranking, tuple(ks), repeat

    def run(self, score_range: ScoreRange) -> None:
        self.inner.run(score_range)

    def result(self) -> dict[str, torch.Tensor]:
        m, ks = self.inner.result(), self.ks
        out = {**{f"hr@{k}": m[f"recall@{k}"] for k in ks}, **{f"ndcg@{k}": m[f"ndcg@{k}"] for k in ks}}
        out["mrr"] = m["mrr"]
        return {name: torch.where(self.repeat, torch.zeros_like(v), v) for name, v in out.items()}


@dataclass
class LooBatches(RankedBatches):
    """The leave-one-out evaluation as its batches of ``batch_users`` sequences (see
    :class:`~metarec_dist.eval.cold_start.ColdStartBatches`: the same batches wherever they run)."""

    num_items: int
    sequences: list[np.ndarray]
    window: int
    ks: tuple[int, ...]
    mask_seen: bool
    item_chunk: int
    device: torch.device | str
    keep: list[int]
    inputs: list[np.ndarray]
    targets: np.ndarray
    spans: list[tuple[int, int]]
    user_features: np.ndarray | None = None

    @classmethod
    def build(
        cls,
        num_items: int,
        sequences: list[np.ndarray],
        window: int,
        ks: Sequence[int] = LOO_KS,
        mask_seen: bool = True,
        batch_users: int = 256,
        device: torch.device | str = "cpu",
        item_chunk: int = DEFAULT_ITEM_CHUNK,
        user_features: np.ndarray | None = None,
    ) -> LooBatches:
        keep, inputs, targets = loo_inputs(sequences, window)
        spans = [(lo, min(lo + batch_users, len(keep))) for lo in range(0, len(keep), batch_users)]
        return cls(
            num_items,
            sequences,
            window,
            tuple(ks),
            mask_seen,
            item_chunk,
            device,
            keep,
            inputs,
            targets,
            spans,
            user_features,
        )

    def batch(self, index: int) -> MetaBatch:
        """The sequences of batch ``index`` as a ``MetaBatch`` on the device: the last ``window`` history
        items are the support (the input the model reads, and adapts on)."""
        lo, hi = self.spans[index]
        feats = None if self.user_features is None else self.user_features[self.keep[lo:hi]]
        window, bos = self.window, bos_id(self.num_items)
        return prefix_batch(self.inputs[lo:hi], window, window, bos, feats).to(self.device)

    def ranking(self, index: int) -> LooRanking:
        """A fresh ranking of batch ``index``'s targets over all items (with ``mask_seen``, the whole
        earlier history excluded, not only the window the model reads)."""
        lo, hi = self.spans[index]
        target = torch.from_numpy(self.targets[lo:hi])
        exclude, repeat = None, torch.zeros(len(target), dtype=torch.bool)
        if self.mask_seen:
            history = [self.sequences[u][:-1] for u in self.keep[lo:hi]]
            exclude, repeat = seen_matrix(history, self.targets[lo:hi])
        ranking = ChunkedRanking(
            self.num_items,
            target[:, None],
            target,
            ks=self.ks,
            next_ks=self.ks[:1],
            exclude=exclude,
            item_chunk=self.item_chunk,
        )
        return LooRanking(ranking, self.ks, repeat)

    def assemble(self, parts: Sequence[dict[str, np.ndarray]]) -> PerUser:
        names = [*(f"hr@{k}" for k in self.ks), *(f"ndcg@{k}" for k in self.ks), "mrr"]
        if not parts:
            return {LOO: {n: np.zeros(0, np.float32) for n in names}}
        return {LOO: {n: np.concatenate([p[n] for p in parts]) for n in names}}


def evaluate_loo(
    scorer: Scorer,
    num_items: int,
    sequences: list[np.ndarray],
    window: int,
    ks: Sequence[int] = LOO_KS,
    steps: int | None = 0,
    mask_seen: bool = True,
    batch_users: int = 256,
    device: torch.device | str = "cpu",
    item_chunk: int = DEFAULT_ITEM_CHUNK,
    user_features: np.ndarray | None = None,
) -> PerUser:
    """``{LOO: {"hr@k", "ndcg@k" for k in ks, "mrr"}}``, one value per sequence with a history. ``steps``:
    test-time adaptation steps on the input window (0 for ``sasrec``/``none``; None: the algorithm's).
    Every batch in this process, in order."""
    batches = LooBatches.build(
        num_items, sequences, window, ks, mask_seen, batch_users, device, item_chunk, user_features
    )
    return batches.assemble([batches.run(scorer, i, steps) for i in range(len(batches))])
