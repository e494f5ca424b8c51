"""The sequence recommender: item embeddings -> causal backbone -> fast-weight head -> tied item scores.

Read top to bottom: ``encode`` runs the backbone once over ``[BOS, support..., query...]``; ``task_loss``
scores hidden states with per-task fast weights ``w [T, P]``; ``score_all`` ranks every item for
evaluation. Scores are tied to the item-embedding table (the output layer is the input table), which halves
the parameters tied to the catalogue and is the standard choice for SASRec-style models.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from metarec_dist.config import ModelConfig
from metarec_dist.models.adapters import FastHead
from metarec_dist.models.backbone import build_backbone, run_backbone
from metarec_dist.models.losses import full_softmax_loss, full_softmax_loss_and_grad, sampled_softmax_loss
from metarec_dist.tasks.types import bos_id


class UserState(NamedTuple):
    """Per task: the adapted hidden state ``hidden [T, d]`` scored against the item table, and the
    ``bias`` adapter's per-item scores ``[T, V]`` (None without it; it is a fast weight, so it is as large
    as the catalogue by design)."""

    hidden: torch.Tensor
    bias: torch.Tensor | None


class SeqRecommender(nn.Module):
    def __init__(self, cfg: ModelConfig, num_items: int, seed: int = 0) -> None:
        super().__init__()
        if num_items < 1:
            raise ValueError("the dataset has no items")
        self.cfg, self.num_items = cfg, num_items
        self.bos_id = bos_id(num_items)
        self.item_emb = nn.Embedding(num_items + 2, cfg.hidden_size, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=cfg.init_std)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.backbone = build_backbone(cfg)
        self.head = FastHead(cfg.adapters, cfg.hidden_size, cfg.adapter_rank, num_items)
        generator = torch.Generator().manual_seed(seed)
        # The meta-learned initialisation of the fast weights (learn2learn would call it the "model" that
        # `adapt` clones). One flat vector; every task starts from it.
        self.fast_init = nn.Parameter(self.head.init(generator))

    def external_parameters(self) -> list[nn.Parameter]:
        """Parameters read outside their owning module's ``forward`` (the tied score table and the fast-weight
        init). ZeRO-3 must be told about them (``register_external_parameter``) or it sees empty tensors."""
        return [self.item_emb.weight, self.fast_init]

    def item_table(self) -> torch.Tensor:
        """``[V, d]``: embeddings of items 1..V, i.e. column j of the scores is item j + 1."""
        return self.item_emb.weight[1 : self.num_items + 1]

    def encode(self, item_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return run_backbone(self.backbone, self.item_emb(item_ids), attention_mask)

    def task_loss(
        self,
        h: torch.Tensor,
        w: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor | None = None,
        table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-task mean next-item loss ``[T]`` of hidden states ``h [T, N, d]`` under fast weights ``w``.
        ``table`` lets the inner loop pass a detached score table (only fast weights adapt)."""
        table = self.item_table() if table is None else table
        hp = self.head.transform(h, w)
        bias = self.head.item_bias(w)
        if self.cfg.loss == "sampled" and negatives is not None:
            return sampled_softmax_loss(hp, targets, table, bias, negatives)
        return full_softmax_loss(hp, targets, table, bias)

    def support_loss_and_grad(
        self, h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, table: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-task full-softmax loss ``[T]`` and its gradient w.r.t. the fast weights ``w [T, P]``, for the
        inner loop: the scoring part is differentiated by hand (see ``full_softmax_loss_and_grad``), only the
        small adapter part goes through autograd."""
        w = w.detach().requires_grad_(True)
        with torch.enable_grad():
            hp = self.head.transform(h, w)
            bias = self.head.item_bias(w)
        loss, grad_hp, grad_bias = full_softmax_loss_and_grad(
            hp.detach(), targets, table, None if bias is None else bias.detach()
        )
        outputs = [t for t in (hp, bias) if t is not None and t.requires_grad]
        grads = [g for t, g in ((hp, grad_hp), (bias, grad_bias)) if t is not None and t.requires_grad]
        (grad_w,) = torch.autograd.grad(outputs, w, grads, allow_unused=True)
        return loss, torch.zeros_like(w) if grad_w is None else grad_w

    def score_all(self, h_last: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Scores ``[T, V]`` of every item from one hidden state per task ``h_last [T, d]``."""
        return self.score_range(self.user_state(h_last, w), 0, self.num_items)

    def user_state(self, h_last: torch.Tensor, w: torch.Tensor) -> UserState:
        """What scoring needs of each task: the adapted hidden state and the per-item bias, if any."""
        return UserState(self.head.transform(h_last[:, None, :], w)[:, 0], self.head.item_bias(w))

    def score_range(self, state: UserState, lo: int, hi: int) -> torch.Tensor:
        """Scores ``[T, hi - lo]`` of item columns ``lo..hi-1``: one chunk of ``score_all``, reading only
        that slice of the item table, so a million-item catalogue is ranked in bounded memory."""
        scores = state.hidden @ self.item_table()[lo:hi].T
        return scores if state.bias is None else scores + state.bias[:, lo:hi]
