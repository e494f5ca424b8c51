"""Next-item losses, per task: full softmax over all items, or sampled softmax with shared negatives.

Both return one mean loss per task (``[T]``) so the inner loop can take the gradient of their sum and get
every task's own gradient in a single backward (tasks do not interact).

Only positions that have a target are scored: with supports of 1..Kmax items, left padding is about half
of the support positions, and the item-scoring matmul and softmax are the dominant cost of the inner loop.
"""

from __future__ import annotations

import torch

# The inner loop's full softmax holds [support positions x items] logits: 0.8 GB for 200 positions at 1M
# items. Above this many items it runs in item chunks (two passes), exact and bounded (test-time adaptation
# of a million-item model; training there uses the sampled softmax, ``model.loss: auto``).
SOFTMAX_ITEM_CHUNK = 65536


def _packed(h: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of ``h [T, N, d]`` that have a target: ``(h_rows [M, d], target_cols [M], task_of_row [M])``."""
    task, pos = (targets > 0).nonzero(as_tuple=True)
    return h[task, pos], targets[task, pos] - 1, task


def _task_mean(nll: torch.Tensor, task: torch.Tensor, num_tasks: int) -> torch.Tensor:
    total = torch.zeros(num_tasks, dtype=nll.dtype, device=nll.device).index_add(0, task, nll)
    count = torch.zeros(num_tasks, dtype=nll.dtype, device=nll.device).index_add(
        0, task, torch.ones_like(nll)
    )
    return total / count.clamp_min(1.0)


def full_softmax_loss(
    h: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``h [T, N, d]``, ``targets [T, N]`` (item ids, 0 = no target), ``table [V, d]`` for items 1..V,
    ``bias [T, V]`` per-task item bias or None."""
    rows, cols, task = _packed(h, targets)
    logits = rows @ table.T
    if bias is not None:
        logits = logits + bias[task]
    nll = logits.logsumexp(-1) - logits.gather(-1, cols[:, None]).squeeze(-1)
    return _task_mean(nll, task, h.shape[0])


def sampled_softmax_loss(
    h: torch.Tensor,
    targets: torch.Tensor,
    table: torch.Tensor,
    bias: torch.Tensor | None,
    negatives: torch.Tensor,
) -> torch.Tensor:
    """Softmax over the target and ``negatives [S]`` (shared by all positions); a negative equal to the
    target is masked out so the model is never pushed away from the right answer."""
    rows, cols, task = _packed(h, targets)
    neg = negatives - 1
    pos_logit = (rows * table[cols]).sum(-1)
    neg_logit = rows @ table[neg].T
    if bias is not None:
        pos_logit = pos_logit + bias[task, cols]
        neg_logit = neg_logit + bias[:, neg][task]
    neg_logit = neg_logit.masked_fill(neg[None, :] == cols[:, None], float("-inf"))
    logits = torch.cat([pos_logit[:, None], neg_logit], dim=-1)
    nll = logits.logsumexp(-1) - pos_logit
    return _task_mean(nll, task, h.shape[0])


def _packed_sets(
    h: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of ``h [T, N, d]`` with at least one target in ``targets [T, N, H]``: ``(h_rows [M, d],
    target_cols [M, H] (0 where absent), valid [M, H], task_of_row [M])``."""
    task, pos = (targets > 0).any(-1).nonzero(as_tuple=True)
    sets = targets[task, pos]
    valid = sets > 0
    return h[task, pos], (sets - 1).clamp_min(0), valid, task


def _set_task_mean(
    nll: torch.Tensor, valid: torch.Tensor, task: torch.Tensor, num_tasks: int
) -> torch.Tensor:
    """Per task, the mean of ``nll [M, H]`` over its valid (position, target) pairs."""
    zeros = torch.zeros(num_tasks, dtype=nll.dtype, device=nll.device)
    total = zeros.index_add(0, task, (nll * valid).sum(-1))
    count = zeros.index_add(0, task, valid.sum(-1).to(nll.dtype))
    return total / count.clamp_min(1.0)


def full_softmax_set_loss(
    h: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Like :func:`full_softmax_loss` with a SET of targets per position (``targets [T, N, H]``, 0 = none):
    each target's softmax cross-entropy from the position's one score row; the scores are computed once per
    position, not once per target. Per task, the mean over its (position, target) pairs."""
    rows, cols, valid, task = _packed_sets(h, targets)
    logits = rows @ table.T
    if bias is not None:
        logits = logits + bias[task]
    nll = logits.logsumexp(-1)[:, None] - logits.gather(-1, cols)
    return _set_task_mean(nll, valid, task, h.shape[0])


def sampled_softmax_set_loss(
    h: torch.Tensor,
    targets: torch.Tensor,
    table: torch.Tensor,
    bias: torch.Tensor | None,
    negatives: torch.Tensor,
) -> torch.Tensor:
    """:func:`sampled_softmax_loss` with a set of targets per position: each target against the shared
    negatives (a negative equal to that target masked out)."""
    rows, cols, valid, task = _packed_sets(h, targets)
    neg = negatives - 1
    pos_logit = (rows[:, None, :] * table[cols]).sum(-1)  # [M, H]
    neg_logit = rows @ table[neg].T  # [M, S]
    if bias is not None:
        pos_logit = pos_logit + bias[task[:, None], cols]
        neg_logit = neg_logit + bias[:, neg][task]
    neg_logit = neg_logit[:, None, :].masked_fill(neg[None, None, :] == cols[:, :, None], float("-inf"))
    nll = torch.logaddexp(pos_logit, neg_logit.logsumexp(-1)) - pos_logit
    return _set_task_mean(nll, valid, task, h.shape[0])


def full_softmax_loss_and_grad(
    h: torch.Tensor,
    targets: torch.Tensor,
    table: torch.Tensor,
    bias: torch.Tensor | None,
    item_chunk: int = SOFTMAX_ITEM_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-task full-softmax loss and its gradients w.r.t. ``h`` and ``bias``, written out by hand.

    The inner loop only needs gradients w.r.t. the fast weights, through ``h`` (the adapted hidden states)
    and the per-item bias. The softmax gradient ``(p - onehot) / n`` is exact and cheap to form, so doing
    the scoring part without autograd saves recording ``[M, V]`` intermediates and recomputing the softmax
    in the backward: the dominant cost of every inner step.
    Returns ``(loss [T], d sum(loss) / dh, d sum(loss) / dbias)``. Catalogues larger than ``item_chunk``
    take :func:`_chunked_softmax_loss_and_grad` (the same quantities, ``[M, item_chunk]`` at a time).
    """
    if table.shape[0] > item_chunk:
        return _chunked_softmax_loss_and_grad(h, targets, table, bias, item_chunk)
    rows, cols, task = _packed(h, targets)
    num_tasks = h.shape[0]
    logits = rows @ table.T
    if bias is not None:
        logits = logits + bias[task]
    lse = logits.logsumexp(-1)
    nll = lse - logits.gather(-1, cols[:, None]).squeeze(-1)
    count = torch.zeros(num_tasks, dtype=h.dtype, device=h.device).index_add(0, task, torch.ones_like(nll))
    count = count.clamp_min(1.0)
    loss = torch.zeros(num_tasks, dtype=h.dtype, device=h.device).index_add(0, task, nll) / count
    grad_logits = logits.sub_(lse[:, None]).exp_()  # softmax, in place
    grad_logits[torch.arange(len(cols), device=h.device), cols] -= 1.0
    grad_logits /= count[task][:, None]
    grad_h = torch.zeros_like(h)
    grad_h[(targets > 0).nonzero(as_tuple=True)] = grad_logits @ table
    grad_bias = None
    if bias is not None:
        grad_bias = torch.zeros_like(bias).index_add_(0, task, grad_logits)
    return loss, grad_h, grad_bias


def _chunked_softmax_loss_and_grad(
    h: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None, item_chunk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`full_softmax_loss_and_grad` ``item_chunk`` items at a time: a first pass for each row's
    log-sum-exp, a second for the softmax's gradient, so only ``[M, item_chunk]`` logits ever exist."""
    rows, cols, task = _packed(h, targets)
    num_tasks, num_items = h.shape[0], table.shape[0]

    def logits(lo: int, hi: int) -> torch.Tensor:
        out = rows @ table[lo:hi].T
        return out if bias is None else out + bias[task, lo:hi]

    chunks = range(0, num_items, item_chunk)
    lse = torch.stack([logits(lo, lo + item_chunk).logsumexp(-1) for lo in chunks], -1).logsumexp(-1)
    target = (rows * table[cols]).sum(-1) + (0 if bias is None else bias[task, cols])
    nll = lse - target
    count = torch.zeros(num_tasks, dtype=h.dtype, device=h.device).index_add(0, task, torch.ones_like(nll))
    count = count.clamp_min(1.0)
    loss = torch.zeros(num_tasks, dtype=h.dtype, device=h.device).index_add(0, task, nll) / count
    scale = 1.0 / count[task][:, None]
    grad_rows = -table[cols] * scale  # the one-hot part of (softmax - onehot) @ table
    grad_bias = None if bias is None else torch.zeros_like(bias)
    for lo in chunks:
        hi = min(lo + item_chunk, num_items)
        p = logits(lo, hi).sub_(lse[:, None]).exp_().mul_(scale)
        grad_rows += p @ table[lo:hi]
        if grad_bias is not None:
            grad_bias[:, lo:hi].index_add_(0, task, p)
    if grad_bias is not None:
        grad_bias.index_put_((task, cols), -scale[:, 0], accumulate=True)
    grad_h = torch.zeros_like(h)
    grad_h[(targets > 0).nonzero(as_tuple=True)] = grad_rows
    return loss, grad_h, grad_bias
