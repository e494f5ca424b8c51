"""Per-task reference implementations: one task at a time, in a Python loop.

This is how learn2learn and ``higher`` users write a meta-step (clone, adapt, evaluate, per task). It is
slow by construction and exists for two reasons: the tests check the batched algorithms against it, and
``metarec bench meta-step`` reports the speed-up of the batched step over it.
"""

from __future__ import annotations

import torch
from torch import nn

from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.types import MetaBatch


def adapt_one(
    model: SeqRecommender,
    h_support: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    lr: float | torch.Tensor,
    negatives=None,
    start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapt one task's fast weights with explicit ``torch.autograd.grad`` calls, from ``start [1, P]``
    (default ``fast_init``): the adapted weights ``[1, P]`` and the sum of the inner gradients (for the
    Meta-SGD reference)."""
    table = model.item_table().detach()
    lr = lr.detach() if isinstance(lr, torch.Tensor) else lr
    w = (model.fast_init[None] if start is None else start).detach().clone()
    total = torch.zeros_like(w)
    for _ in range(steps):
        w.requires_grad_(True)
        loss = model.task_loss(h_support, w, targets, negatives, table=table).sum()
        (grad,) = torch.autograd.grad(loss, w)
        total = total + grad
        w = (w - lr * grad).detach()
    return w, total


def context_init_one(
    model: SeqRecommender, encoder: nn.Module, h_support: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """One task's generated init ``fast_init + g(support)`` ``[1, P]``, written out: only the task's real
    support pairs are selected (no masking arithmetic), each encoded, then averaged."""
    real = targets[0] > 0
    items = targets[0, real]
    pairs = torch.cat([h_support[0, real].detach(), model.embed_items(items).detach()], dim=-1)
    codes = torch.relu(pairs @ encoder.pair.weight.T + encoder.pair.bias)
    summary = codes.mean(0) if len(items) else torch.zeros_like(encoder.pair.bias)
    return model.fast_init[None] + (summary @ encoder.out.weight.T + encoder.out.bias)[None]


# Each context-init algorithm is its base algorithm started from the generated init.
CONTEXT_INIT = {"hyperfomaml": "fomaml", "hypermetasgd": "metasgd"}


def loop_meta_loss(
    model: SeqRecommender,
    batch: MetaBatch,
    algorithm: str,
    steps: int,
    lr: float | torch.Tensor,
    init_query_weight: float = 0.0,
    dense_weight: float = 0.0,
    context: nn.Module | None = None,
) -> torch.Tensor:
    """The meta-loss built task by task (backbone run per task); its gradient is the reference gradient.

    ``lr``: the inner lr, for ``metasgd`` the learned per-weight rates (with their graph). Meta-SGD's
    adapted weights are written out as ``init - lr * G`` (``G`` the detached sum of the inner
    gradients): same value as FOMAML's, and autograd gives ``lr`` its first-order gradient ``-G * dL/dw``
    directly. ``context``: the context encoder of ``hyperfomaml`` / ``hypermetasgd``, whose per-task init
    ``w0 = fast_init + g(support)`` takes ``fast_init``'s place (and its gradient)."""
    if algorithm not in ("fomaml", "metasgd", "reptile", "none", "sasrec", *CONTEXT_INIT):
        raise ValueError(f"no per-task reference for algorithm {algorithm!r}")
    if (algorithm in CONTEXT_INIT) != (context is not None):
        raise ValueError(f"algorithm {algorithm!r}: pass its context encoder exactly when it has one")
    total = torch.zeros(())
    k, q = batch.support_len, batch.query_targets.shape[1]
    for t in range(batch.num_tasks):
        one = batch.slice(t, t + 1)
        h = model.encode(one.item_ids, one.attention_mask, one.user_features)
        h_s, h_q = h[:, :k].detach(), h[:, k : k + q]
        if algorithm in ("none", "sasrec"):
            w = model.fast_init[None]
            if algorithm == "sasrec":  # every position of the window, support and query alike
                h_q = h[:, : k + q]
                targets = torch.cat([one.support_targets, one.query_targets], dim=1)
            else:
                targets = one.query_targets
            total = total + model.task_loss(h_q, w, targets, one.negatives).sum()
            continue
        init = model.fast_init[None]
        if context is not None:
            init = context_init_one(model, context, h_s, one.support_targets)
        adapted, grad_sum = adapt_one(model, h_s, one.support_targets, steps, lr, one.negatives, start=init)
        if algorithm == "reptile":
            total = total + model.task_loss(h_q, adapted, one.query_targets, one.negatives).sum()
            total = total + 0.5 * (model.fast_init - adapted[0]).pow(2).sum()
            continue
        if CONTEXT_INIT.get(algorithm, algorithm) == "metasgd":
            w = init - lr[None] * grad_sum
        else:
            w = init + (adapted - init).detach()
        total = total + model.task_loss(h_q, w, one.query_targets, one.negatives).sum()
        if init_query_weight:
            at_init = model.task_loss(h_q, init, one.query_targets, one.negatives).sum()
            total = total + init_query_weight * at_init
        if dense_weight:  # SASRec's loss over the whole window, at the un-adapted weights
            targets = torch.cat([one.support_targets, one.query_targets], dim=1)
            dense = model.task_loss(h[:, : k + q], model.fast_init[None], targets, one.negatives).sum()
            total = total + dense_weight * dense
    return total / batch.num_tasks
