"""The sequence recommender: item embeddings -> causal backbone -> fast-weight head -> tied item scores.

Read top to bottom: ``encode`` runs the backbone once over ``[BOS, support..., query...]``; ``task_loss``
scores hidden states with per-task fast weights ``w [T, P]``; ``score_all`` ranks every item for
evaluation. Scores are tied to the item-embedding table (the output layer is the input table), which halves
the parameters tied to the catalogue and is the standard choice for SASRec-style models.

With side information (``layout``, see ``models/features.py``) an item's vector is its id embedding plus
its content embedding, in the input tokens and in the score table alike, and the user's features are one
more token before BOS. Without it the model is exactly the id-only one (same parameters, same numbers).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from metarec_dist.config import ModelConfig
from metarec_dist.data.features import FeatureTables
from metarec_dist.models.adapters import FastHead
from metarec_dist.models.backbone import build_backbone, run_backbone
from metarec_dist.models.features import FeatureLayout, ItemContent, UserToken, plan_features
from metarec_dist.models.losses import (
    full_softmax_loss,
    full_softmax_loss_and_grad,
    full_softmax_set_loss,
    sampled_softmax_loss,
    sampled_softmax_set_loss,
)
from metarec_dist.tasks.types import bos_id


class UserState(NamedTuple):
    """Per task: the adapted hidden state ``hidden [T, d]`` (``d + r`` with item-side adapters) scored
    against the item table, and the ``bias`` adapter's per-item scores ``[T, V]`` (None without it; it is a
    fast weight, so it is as large as the catalogue by design)."""

    hidden: torch.Tensor
    bias: torch.Tensor | None


def table_dtype(model: nn.Module, bias: torch.Tensor | None) -> torch.dtype:
    """The dtype the logits are computed in: the per-item bias's, else the item table's."""
    return bias.dtype if bias is not None else model.item_emb.weight.dtype


class SeqRecommender(nn.Module):
    def __init__(
        self, cfg: ModelConfig, num_items: int, seed: int = 0, layout: FeatureLayout | None = None
    ) -> None:
        """``layout``: the side information the model reads (None: ids only). Its per-item buffers start
        empty: ``for_data`` fills them from the data, ``load_state_dict`` from a checkpoint."""
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
        # Built after everything above, so that without features every parameter starts as before.
        self.layout = layout
        self.content = self.user_token = None
        if layout is not None and layout.item:
            self.content = ItemContent(
                layout.item, num_items, cfg.hidden_size, cfg.item_content, cfg.init_std
            )
        if layout is not None and layout.user:
            self.user_token = UserToken(layout.user, cfg.hidden_size, cfg.init_std)
        self._id_keep: torch.Tensor | None = None  # this forward's item-id dropout mask (training only)
        # ``model.unseen_items: exclude``: 0 for items with training interactions, -inf for the others,
        # added to the training softmax's logits (set by ``for_data``; None: every item is a candidate).
        # Not persistent: it only acts in training, where ``for_data`` builds it from the data.
        self.register_buffer("unseen_logits", None, persistent=False)
        # Slow item factors ``F [V, r]`` for the item-side adapters (``itemlr``): the score table is
        # ``[E | F]``. None without them, so models without item-side adapters are exactly what they were.
        # A module read through its ``forward`` (not a bare 2-D parameter): ZeRO-3 then gathers it for the
        # backward too, where torch cannot lay a [V, r] gradient onto a released (empty) parameter.
        self.item_factors: nn.Embedding | None = None
        if self.head.item_factor_dim:
            self.item_factors = nn.Embedding(num_items, self.head.item_factor_dim)
            factors = torch.randn(self.item_factors.weight.shape, generator=generator) * cfg.init_std
            with torch.no_grad():
                self.item_factors.weight.copy_(factors)

    @classmethod
    def for_data(
        cls,
        cfg: ModelConfig,
        num_items: int,
        features: FeatureTables | None,
        train_sequences: list[np.ndarray],
        seed: int = 0,
        cache_dir: Path | None = None,
    ) -> SeqRecommender:
        """The model for a data set: its declared features (titles through ``model.text_encoder`` when
        set, cached under ``cache_dir``), and the items of ``train_sequences`` as the ones with a trained id
        row."""
        text = None
        if cfg.text_encoder and features is not None and cfg.item_content != "off":
            from metarec_dist.models.text_encoder import encode_titles

            text = encode_titles(cfg.text_encoder, features, cache_dir)
        layout, arrays = plan_features(cfg, features, text)
        model = cls(cfg, num_items, seed, layout)
        trained = np.zeros(num_items + 1, dtype=bool)
        if train_sequences:
            trained[np.concatenate(train_sequences)] = True
        trained[0] = True  # the padding row is zero anyway
        if model.content is not None:
            model.content.set_items(arrays, trained)
        if cfg.unseen_items == "exclude":
            unseen = torch.from_numpy(~trained[1:])
            model.unseen_logits = torch.zeros(num_items).masked_fill(unseen, float("-inf"))
        return model

    def external_parameters(self) -> list[nn.Parameter]:
        """Parameters read outside their owning module's ``forward`` (the tied score table, with the item
        content it is built from, and the fast-weight init). ZeRO-3 must be told about them
        (``register_external_parameter``) or it sees empty tensors."""
        extra = [m for m in (self.content, self.user_token) if m is not None]
        return [self.item_emb.weight, *(p for m in extra for p in m.parameters()), self.fast_init]

    def embed_items(self, ids: torch.Tensor) -> torch.Tensor:
        """Item vectors ``[..., d]`` of item ids (0 padding, V + 1 BOS): the id embedding, plus the
        content embedding when the model has item features. The item-id dropout of the last ``encode`` acts
        in training only: an evaluation-mode read never sees a stale training mask."""
        vectors = self.item_emb(ids)
        keep = self._id_keep if self.training else None
        return vectors if self.content is None else self.content(vectors, ids, keep)

    def item_rows(self, lo: int, hi: int) -> torch.Tensor:
        """``[hi - lo, d]``: vectors of score columns ``lo..hi-1`` (items ``lo + 1..hi``); with item-side
        adapters ``[hi - lo, d + r]``, each item's slow factors appended."""
        if self.content is None:
            rows = self.item_emb.weight[1 + lo : 1 + hi]
        else:
            rows = self.embed_items(torch.arange(lo + 1, hi + 1, device=self.item_emb.weight.device))
        if self.item_factors is None:
            return rows
        return torch.cat(
            [rows, self.item_factors(torch.arange(lo, lo + len(rows), device=rows.device))], dim=1
        )

    def item_table(self) -> torch.Tensor:
        """``[V, d]``: vectors of items 1..V, i.e. column j of the scores is item j + 1."""
        return self.item_rows(0, self.num_items)

    def encode(
        self,
        item_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        user_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states ``[T, L, d]`` of the batch layout (``tasks/types.py``). With user features the
        backbone reads one more token first, the user's (unknown features when ``user_features`` is None);
        its output position is dropped, so the layout of the result does not change."""
        self._id_keep = self._draw_id_keep()
        embeds = self.embed_items(item_ids)
        if self.user_token is None:
            return run_backbone(self.backbone, embeds, attention_mask)
        n = item_ids.shape[0]
        if user_features is None:
            user_features = self.user_token.unknown(n, item_ids.device)
        user = self.user_token(user_features.to(item_ids.device))[:, None, :].to(embeds.dtype)
        # Before the left padding: the padding is masked out, so the user token is next to BOS for
        # attention, and the positions (counted over unmasked tokens) are 0 for it and 1 for BOS.
        embeds = torch.cat([user, embeds], dim=1)
        mask = torch.cat([attention_mask.new_ones(n, 1), attention_mask], dim=1)
        return run_backbone(self.backbone, embeds, mask)[:, 1:]

    def _draw_id_keep(self) -> torch.Tensor | None:
        """One item-id dropout mask per forward (``encode`` starts every forward), so that the inputs, the
        inner loop and the outer loss of a meta-step see the same items as content-only."""
        p = self.cfg.item_id_dropout
        if self.content is None or not self.training or p <= 0:
            return None
        weight = self.item_emb.weight
        keep = (torch.rand(self.num_items + 2, device=weight.device) >= p).to(weight.dtype)
        keep[0] = keep[-1] = 1  # padding and BOS are never dropped
        return keep

    def task_loss(
        self,
        h: torch.Tensor,
        w: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor | None = None,
        table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-task mean next-item loss ``[T]`` of hidden states ``h [T, N, d]`` under fast weights ``w``.
        ``targets`` ``[T, N]`` (one next item per position) or ``[T, N, H]`` (a set of items per position,
        see ``meta.dense_horizon``). ``table`` lets the inner loop pass a detached score table (only fast
        weights adapt)."""
        table = self.item_table() if table is None else table
        hp = self.head.transform(h, w)
        bias = self._train_bias(self.head.item_bias(w), h.shape[0])
        if targets.dim() == 3:
            if self.cfg.loss == "sampled" and negatives is not None:
                return sampled_softmax_set_loss(hp, targets, table, bias, negatives)
            return full_softmax_set_loss(hp, targets, table, bias)
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
            hp.detach(), targets, table, self._train_bias(None if bias is None else bias.detach(), h.shape[0])
        )
        outputs = [t for t in (hp, bias) if t is not None and t.requires_grad]
        grads = [g for t, g in ((hp, grad_hp), (bias, grad_bias)) if t is not None and t.requires_grad]
        (grad_w,) = torch.autograd.grad(outputs, w, grads, allow_unused=True)
        return loss, torch.zeros_like(w) if grad_w is None else grad_w

    def _train_bias(self, bias: torch.Tensor | None, num_tasks: int) -> torch.Tensor | None:
        """The per-task item bias ``[T, V]`` of the training softmax: with ``model.unseen_items: exclude``,
        items without training interactions get -inf (no probability, no gradient to their rows). Training
        only: test-time adaptation and scoring see every item as before."""
        if self.unseen_logits is None or not self.training:
            return bias
        mask = self.unseen_logits.to(table_dtype(self, bias)).expand(num_tasks, -1)
        return mask if bias is None else bias + mask

    def score_all(self, h_last: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Scores ``[T, V]`` of every item from one hidden state per task ``h_last [T, d]``."""
        return self.score_range(self.user_state(h_last, w), 0, self.num_items)

    def user_state(self, h_last: torch.Tensor, w: torch.Tensor) -> UserState:
        """What scoring needs of each task: the adapted hidden state and the per-item bias, if any."""
        return UserState(self.head.transform(h_last[:, None, :], w)[:, 0], self.head.item_bias(w))

    def score_range(self, state: UserState, lo: int, hi: int) -> torch.Tensor:
        """Scores ``[T, hi - lo]`` of item columns ``lo..hi-1``: one chunk of ``score_all``, reading only
        that slice of the item table, so a million-item catalogue is ranked in bounded memory."""
        scores = state.hidden @ self.item_rows(lo, hi).T
        return scores if state.bias is None else scores + state.bias[:, lo:hi]
