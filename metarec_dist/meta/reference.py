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


def dense_one(
    model: SeqRecommender, h: torch.Tensor, one: MetaBatch, horizon: int, exclude_seen: bool
) -> torch.Tensor:
    """One task's dense term written out position by position and target by target: the hidden state at
    position p (which has read ``item_ids[0..p]``) predicts each of the window's next ``horizon`` items
    (the window's targets at p..p+h-1) with its own softmax cross-entropy, at the un-adapted fast weights;
    with ``exclude_seen`` an item already in ``item_ids[0..p]`` or earlier in the same set is skipped.
    The mean over the task's (position, target) pairs (``[1]``)."""
    ids = one.item_ids[0].tolist()
    nxt = torch.cat([one.support_targets, one.query_targets], dim=1)[0].tolist()  # position p's next item
    w = model.fast_init[None]
    pairs = []
    for p in range(len(nxt)):
        if nxt[p] <= 0:  # left padding, or past the (masked) end of the window
            continue
        chosen: list[int] = []
        for item in nxt[p : p + horizon]:
            if item <= 0 or (exclude_seen and (item in ids[: p + 1] or item in chosen)):
                continue
            chosen.append(item)
            target = torch.tensor([[item]])
            pairs.append(model.task_loss(h[:, p : p + 1], w, target, one.negatives))
    return torch.stack(pairs).mean(0) if pairs else torch.zeros(1)


def loop_meta_loss(
    model: SeqRecommender,
    batch: MetaBatch,
    algorithm: str,
    steps: int,
    lr: float | torch.Tensor,
    init_query_weight: float = 0.0,
    dense_weight: float = 0.0,
    context: nn.Module | None = None,
    dense_horizon: int = 1,
    dense_exclude_seen: bool = False,
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
        if algorithm == "sasrec":  # every position of the window, support and query alike
            total = total + dense_one(model, h, one, dense_horizon, dense_exclude_seen).sum()
            continue
        if algorithm == "none":
            total = (
                total + model.task_loss(h_q, model.fast_init[None], one.query_targets, one.negatives).sum()
            )
            if dense_weight:
                total = (
                    total + dense_weight * dense_one(model, h, one, dense_horizon, dense_exclude_seen).sum()
                )
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
            total = total + dense_weight * dense_one(model, h, one, dense_horizon, dense_exclude_seen).sum()
    return total / batch.num_tasks
