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
    lr: float | torch.Tensor,
    negatives=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapt one task's fast weights with explicit ``torch.autograd.grad`` calls: the adapted weights
    ``[1, P]`` and the sum of the inner gradients (for the Meta-SGD reference)."""
    table = model.item_table().detach()
    lr = lr.detach() if isinstance(lr, torch.Tensor) else lr
    w = model.fast_init.detach().clone()[None]
    total = torch.zeros_like(w)
    for _ in range(steps):
        w.requires_grad_(True)
        loss = model.task_loss(h_support, w, targets, negatives, table=table).sum()
        (grad,) = torch.autograd.grad(loss, w)
        total = total + grad
        w = (w - lr * grad).detach()
    return w, total


def loop_meta_loss(
    model: SeqRecommender,
    batch: MetaBatch,
    algorithm: str,
    steps: int,
    lr: float,
    init_query_weight: float = 0.0,
) -> torch.Tensor:
    """The meta-loss built task by task (backbone run per task); its gradient is the reference gradient.

    With a learned inner lr (Meta-SGD) FOMAML's adapted weights are written out as ``fast_init - lr * G``
    (``G`` the detached sum of the inner gradients): same value, and autograd gives ``lr`` its first-order
    gradient ``-G * dL/dw`` directly."""
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
        vector_lr = model.inner_lr(lr)
        adapted, grad_sum = adapt_one(model, h_s, one.support_targets, steps, vector_lr, one.negatives)
        if algorithm == "fomaml":
            if isinstance(vector_lr, torch.Tensor):
                w = model.fast_init[None] - vector_lr[None] * grad_sum
            else:
                w = model.fast_init[None] + (adapted - model.fast_init[None]).detach()
            total = total + model.task_loss(h_q, w, one.query_targets, one.negatives).sum()
            if init_query_weight:
                at_init = model.task_loss(h_q, model.fast_init[None], one.query_targets, one.negatives).sum()
                total = total + init_query_weight * at_init
        else:  # reptile
            total = total + model.task_loss(h_q, adapted, one.query_targets, one.negatives).sum()
            total = total + 0.5 * (model.fast_init - adapted[0]).pow(2).sum()
    return total / batch.num_tasks
