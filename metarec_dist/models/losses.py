"""Next-item losses, per task: full softmax over all items, or sampled softmax with shared negatives.

Both return one mean loss per task (``[T]``) so the inner loop can take the gradient of their sum and get
every task's own gradient in a single backward (tasks do not interact).
"""

from __future__ import annotations

import torch


def _masked_task_mean(per_position: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    valid = (targets > 0).to(per_position.dtype)
    return (per_position * valid).sum(-1) / valid.sum(-1).clamp_min(1.0)


def full_softmax_loss(
    h: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``h [T, N, d]``, ``targets [T, N]`` (item ids, 0 = no target), ``table [V, d]`` for items 1..V."""
    logits = h @ table.T
    if bias is not None:
        logits = logits + bias[:, None, :]
    idx = (targets - 1).clamp_min(0)
    nll = logits.logsumexp(-1) - logits.gather(-1, idx[..., None]).squeeze(-1)
    return _masked_task_mean(nll, targets)


def sampled_softmax_loss(
    h: torch.Tensor,
    targets: torch.Tensor,
    table: torch.Tensor,
    bias: torch.Tensor | None,
    negatives: torch.Tensor,
) -> torch.Tensor:
    """Softmax over the target and ``negatives [S]`` (shared by all positions); a negative equal to the
    target is masked out so the model is never pushed away from the right answer."""
    idx = (targets - 1).clamp_min(0)
    neg = negatives - 1
    pos_logit = (h * table[idx]).sum(-1)
    neg_logit = h @ table[neg].T
    if bias is not None:
        pos_logit = pos_logit + bias.gather(-1, idx)
        neg_logit = neg_logit + bias[:, neg][:, None, :]
    neg_logit = neg_logit.masked_fill(neg[None, None, :] == idx[..., None], float("-inf"))
    logits = torch.cat([pos_logit[..., None], neg_logit], dim=-1)
    nll = logits.logsumexp(-1) - pos_logit
    return _masked_task_mean(nll, targets)
