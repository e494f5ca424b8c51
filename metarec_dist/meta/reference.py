"""Per-task reference implementations: one task at a time, in a Python loop.

This is how learn2learn and ``higher`` users write a meta-step (clone, adapt, evaluate, per task). It is
slow by construction and exists for two reasons: the tests check the batched algorithms against it, and
``metarec bench meta-step`` reports the speed-up of the batched step over it.
"""

from __future__ import annotations

import torch

from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.types import MetaBatch


def adapt_one(
    model: SeqRecommender,
    h_support: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    lr: float,
    negatives=None,
) -> torch.Tensor:
    """Adapt one task's fast weights ``[1, P]`` with explicit ``torch.autograd.grad`` calls."""
    table = model.item_table().detach()
    w = model.fast_init.detach().clone()[None]
    for _ in range(steps):
        w.requires_grad_(True)
        loss = model.task_loss(h_support, w, targets, negatives, table=table).sum()
        (grad,) = torch.autograd.grad(loss, w)
        w = (w - lr * grad).detach()
    return w


def loop_meta_loss(
    model: SeqRecommender, batch: MetaBatch, algorithm: str, steps: int, lr: float
) -> torch.Tensor:
    """The meta-loss built task by task (backbone run per task); its gradient is the reference gradient."""
    if algorithm not in ("fomaml", "reptile", "none"):
        raise ValueError(f"no per-task reference for algorithm {algorithm!r}")
    total = torch.zeros(())
    k, q = batch.support_len, batch.query_targets.shape[1]
    for t in range(batch.num_tasks):
        one = batch.slice(t, t + 1)
        h = model.encode(one.item_ids, one.attention_mask)
        h_s, h_q = h[:, :k].detach(), h[:, k : k + q]
        if algorithm == "none":
            w = model.fast_init[None]
            total = total + model.task_loss(h_q, w, one.query_targets, one.negatives).sum()
            continue
        adapted = adapt_one(model, h_s, one.support_targets, steps, lr, one.negatives)
        if algorithm == "fomaml":
            w = model.fast_init[None] + (adapted - model.fast_init[None]).detach()
            total = total + model.task_loss(h_q, w, one.query_targets, one.negatives).sum()
        else:  # reptile
            total = total + model.task_loss(h_q, adapted, one.query_targets, one.negatives).sum()
            total = total + 0.5 * (model.fast_init - adapted[0]).pow(2).sum()
    return total / batch.num_tasks
