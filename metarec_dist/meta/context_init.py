"""Fast-weight initialisation generated from the support (a CAVIA / TaNP-style context encoder), then refined
by the usual first-order inner steps::

    w0_t    = fast_init + g(support_t)                     # per task, with grad: part of the initialisation
    adapted = inner_loop(w0_t.detach(), h_support)        # unchanged
    loss    = query_loss(w0_t + (adapted - w0_t).detach())   # FOMAML's straight-through, from w0_t

so the first-order outer gradient reaches ``g`` exactly as it reaches ``fast_init``: ``g`` is part of the
initialisation. Gradient steps alone need several interactions to move a user away from the shared init; the
encoder jumps there in one forward pass (amortised inference, as in neural processes), and the steps refine.

``g`` (:class:`ContextEncoder`) is the deterministic path of TaNP / conditional neural processes: every
support pair (hidden state ``h_i``, the item ``y_i`` it predicts) is encoded on its own, the codes are
mean-pooled over the task's real pairs (any K, order-free, padding masked), and a linear layer maps that
summary to an offset of every fast weight. Pairs rather than hidden states: the support states read the
support up to its second-last item, so the last item reaches the summary only as a target, and with K = 1
the only support state is BOS's, the same for every user.

The encoder reads the support through detached features (backbone states and item embeddings), like the
inner loop: the backbone and the item table keep FOMAML's gradient, and ``g`` learns on top of them. Its
output layer starts at zero, so training starts exactly where FOMAML does.
"""

from __future__ import annotations

import torch
from torch import nn

from metarec_dist.config import MetaConfig
from metarec_dist.meta.algorithms import FOMAML, Features, MetaSGD, register
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.tasks.types import MetaBatch


class ContextEncoder(nn.Module):
    """Support pairs ``(h_i, e(y_i))`` -> per-pair code -> masked mean over the task -> fast-weight offset."""

    def __init__(self, hidden_size: int, num_fast_weights: int) -> None:
        super().__init__()
        self.pair = nn.Linear(2 * hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, num_fast_weights)
        nn.init.zeros_(self.out.weight)  # offset 0 at the start: the plain shared init
        nn.init.zeros_(self.out.bias)

    def summary(self, h_support: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``[T, d]``: the mean code of each task's support pairs (``targets > 0``; none: zeros)."""
        codes = torch.relu(self.pair(torch.cat([h_support, item_emb], dim=-1)))
        mask = (targets > 0).unsqueeze(-1).to(codes.dtype)
        return (codes * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def forward(self, h_support: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Offsets ``[T, P]`` of the fast-weight init from ``h_support [T, K, d]``, the embeddings of the
        items they predict ``item_emb [T, K, d]`` and ``targets [T, K]`` (0 = padding)."""
        return self.out(self.summary(h_support, item_emb, targets))


class ContextInit:
    """Mixin for an inner-loop algorithm: each task's init is ``fast_init + g(support)``, ``g`` a
    :class:`ContextEncoder` the algorithm owns (trained, checkpointed and exported with it, and registered
    with ZeRO-3 as the meta-learner's external parameters like Meta-SGD's rates). Without an inner step
    the generated init still learns: not an error (``check_training``)."""

    without_inner_step = None

    def __init__(self, meta: MetaConfig, model: SeqRecommender) -> None:
        super().__init__(meta, model)  # type: ignore[call-arg]
        self.context = ContextEncoder(model.cfg.hidden_size, model.head.size)

    def context_offset(
        self, model: SeqRecommender, h_support: torch.Tensor, support_targets: torch.Tensor
    ) -> torch.Tensor:
        item_emb = model.embed_items(support_targets).detach()  # padding id 0: zeros (masked anyway)
        return self.context(h_support.detach(), item_emb, support_targets)

    def task_init(
        self, model: SeqRecommender, h_support: torch.Tensor, support_targets: torch.Tensor
    ) -> torch.Tensor:
        return model.fast_init + self.context_offset(model, h_support, support_targets)

    def outer_loss(
        self, model: SeqRecommender, feats: Features, batch: MetaBatch, adapted: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, metrics = super().outer_loss(model, feats, batch, adapted)  # type: ignore[misc]
        with torch.no_grad():  # how far the encoder moves the init, per task (0 at the start of training)
            offset = self.context_offset(model, feats.support, batch.support_targets)
            metrics["context_offset_norm"] = offset.norm(dim=1).mean()
        return loss, metrics


@register("hyperfomaml")
class HyperFOMAML(ContextInit, FOMAML):
    """FOMAML from a per-task init generated from the support (see the module docstring); FOMAML's options
    (``init_query_weight``: the query loss at the generated init, ``dense_weight``) apply unchanged."""


@register("hypermetasgd")
class HyperMetaSGD(ContextInit, MetaSGD):
    """Meta-SGD from a per-task init generated from the support: where to start and how far each fast
    weight may move are both learned."""

    without_inner_step = "hyperfomaml"  # the rates never learn
