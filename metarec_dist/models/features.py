"""Side information in the model: item content beside the item id, and the user's features as one token.

Item representation, for the input tokens and the tied score table alike::

    sum:    item(i) = keep(i) * id(i) + content(i)
    gated:  item(i) = a(i) * id(i) + (1 - a(i)) * content(i),   a(i) = keep(i) * sigmoid(W content(i) + b)
    content(i) = sum over the item's features f of the mean of E_f[id] over f's ids for item i
                 (token, float bucket: one id; token_seq: the bag; title: hashed words, or a frozen text
                 encoder's vector through a learned projection)

``keep(i)`` is 0 for an item without a training interaction, so such an item (a new one) is scored from its
content alone: its id row has no effect on any score and gets no gradient. Why a mask and not only a zero
init of those rows: with the full softmax every item is a negative in every step, so an item that is never
a positive has its id row trained too -- pushed towards "never recommend me" -- and that learned row, not
an untrained one, would decide a new item's score (and its content would be trained as "never the answer"
too: under ``data.protocol: new_items`` such items are therefore no candidate of the training softmax,
``model.unseen_items``). ``model.item_id_dropout`` additionally represents a random share of the trained
items by content alone in each training step, so that content-only vectors are what the backbone and the
score table were trained on.

The per-item feature ids are buffers (not parameters): they travel with checkpoints and exports, and
DeepSpeed never partitions or updates them. ``FeatureLayout`` is the JSON description (names, kinds,
vocabularies, shapes) that lets an export rebuild the model before its weights are loaded.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from metarec_dist.config import ModelConfig
from metarec_dist.data.features import PAD, UNKNOWN, EncodedFeature, FeatureTables, feature_width, id_features

MAX_TITLE_WORDS = 32
_WORD = re.compile(r"[^\W_]+")


@dataclass
class FeatureSlot:
    """One feature as the model holds it."""

    name: str
    kind: str  # token | token_seq | float | title
    num_ids: int  # rows of its embedding table (vocabulary with PAD/UNK; title: hash buckets + 1; 0: text)
    width: int  # ids per row (title through a text encoder: the vector size)
    vocab: list[str] = field(default_factory=list)
    boundaries: list[float] = field(default_factory=list)

    def encoded(self) -> EncodedFeature:
        """An ``EncodedFeature`` without rows, for ``lookup`` / ``encode_user`` at request time."""
        shape = (0, self.width) if self.kind == "token_seq" else (0,)
        return EncodedFeature(
            self.name, self.kind, list(self.vocab), np.zeros(shape, np.int64), boundaries=self.boundaries
        )


@dataclass
class FeatureLayout:
    item: list[FeatureSlot] = field(default_factory=list)
    user: list[FeatureSlot] = field(default_factory=list)
    text_dim: int = 0  # > 0: title features are text-encoder vectors of this size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FeatureLayout | None:
        if not data:
            return None
        return cls(
            item=[FeatureSlot(**s) for s in data.get("item", [])],
            user=[FeatureSlot(**s) for s in data.get("user", [])],
            text_dim=int(data.get("text_dim", 0)),
        )

    def user_features(self) -> dict[str, EncodedFeature]:
        """The user features by name, for encoding a user described at request time."""
        return {s.name: s.encoded() for s in self.user}


def title_word_ids(titles: Sequence[str], buckets: int) -> np.ndarray:
    """``[N, W]`` hashed word ids (1..buckets; 0 pads) of each title's lower-cased words, at most
    ``MAX_TITLE_WORDS``. CRC32 is stable across processes and Python versions (``hash()`` is salted)."""
    rows = [
        [1 + zlib.crc32(w.encode()) % buckets for w in _WORD.findall(str(t).lower())][:MAX_TITLE_WORDS]
        for t in titles
    ]
    out = np.zeros((len(rows), max((len(r) for r in rows), default=1) or 1), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _slot(f: EncodedFeature, num_ids: int | None = None, width: int | None = None) -> FeatureSlot:
    return FeatureSlot(
        f.name,
        f.kind,
        len(f.vocab) if num_ids is None else num_ids,
        feature_width(f) if width is None else width,
        list(f.vocab),
        list(f.boundaries),
    )


def plan_features(
    cfg: ModelConfig, tables: FeatureTables | None, text_vectors: dict[str, np.ndarray] | None = None
) -> tuple[FeatureLayout | None, list[np.ndarray]]:
    """The layout the model is built with, and each item slot's per-item array (ids ``[V + 1, W]``, or
    text vectors ``[V + 1, D]`` for titles when ``text_vectors`` holds them by feature name)."""
    if tables is None:
        return None, []
    layout, arrays = FeatureLayout(), []
    if cfg.item_content != "off":
        for f in tables.item.values():
            if f.kind != "title":
                layout.item.append(_slot(f))
                arrays.append(f.values.reshape(len(f.values), -1))
            elif text_vectors is not None:
                vectors = text_vectors[f.name]
                layout.text_dim = vectors.shape[1]
                layout.item.append(_slot(f, num_ids=0, width=vectors.shape[1]))
                arrays.append(vectors)
            else:
                ids = title_word_ids(list(f.values), cfg.title_buckets)
                layout.item.append(_slot(f, num_ids=cfg.title_buckets + 1, width=ids.shape[1]))
                arrays.append(ids)
    if cfg.user_prefix:
        layout.user = [_slot(f) for f in id_features(tables.user)]
    if not (layout.item or layout.user):
        return None, []
    return layout, arrays


def _embedding(num: int, dim: int, std: float) -> nn.EmbeddingBag:
    # A bag: the mean over a row's ids without the padding ones, and no [rows, W, d] intermediate (the
    # score table computes the content of every item).
    emb = nn.EmbeddingBag(num, dim, mode="mean", padding_idx=PAD)
    nn.init.normal_(emb.weight, std=std)
    with torch.no_grad():
        emb.weight[PAD].zero_()
    return emb


def _bag_mean(emb: nn.EmbeddingBag, ids: torch.Tensor) -> torch.Tensor:
    """``[..., d]``: the mean of the embeddings of the non-padding ids along the last axis of ``ids``
    (zero for a row of padding only)."""
    return emb(ids.reshape(-1, ids.shape[-1])).reshape(*ids.shape[:-1], -1)


class ItemContent(nn.Module):
    """``content(i)`` and its combination with the id embedding (see the module docstring). Rows of the
    buffers follow the item-embedding table: 0 padding, 1..V items, V + 1 BOS (no content)."""

    def __init__(self, slots: list[FeatureSlot], num_items: int, dim: int, mode: str, std: float) -> None:
        super().__init__()
        self.slots, self.mode = slots, mode
        rows = num_items + 2
        self.embs = nn.ModuleList()
        self.projs = nn.ModuleList()
        for k, s in enumerate(slots):
            if s.num_ids:
                self.embs.append(_embedding(s.num_ids, dim, std))
                self.register_buffer(f"ids_{k}", torch.zeros(rows, s.width, dtype=torch.long))
            else:  # precomputed text vectors; no bias, so an item without text gets no content from it
                proj = nn.Linear(s.width, dim, bias=False)
                nn.init.normal_(proj.weight, std=std)
                self.projs.append(proj)
                self.register_buffer(f"text_{k}", torch.zeros(rows, s.width))
        self.gate = nn.Linear(dim, dim) if mode == "gated" else None
        # keep(i): 1 for items with training interactions (and BOS); set by ``set_items``.
        self.register_buffer("has_id", torch.ones(rows))

    def set_items(self, arrays: list[np.ndarray], trained: np.ndarray | None) -> None:
        """Fill the buffers: ``arrays[k]`` is slot k's ``[V + 1, W]`` per-item array (row 0 padding);
        ``trained`` ``[V + 1]`` bool marks the items with training interactions (None: all)."""
        with torch.no_grad():
            for k, array in enumerate(arrays):
                name = f"ids_{k}" if self.slots[k].num_ids else f"text_{k}"
                buf = getattr(self, name)
                buf.zero_()
                buf[: len(array)] = torch.as_tensor(np.asarray(array), dtype=buf.dtype)
            if trained is not None:
                self.has_id[: len(trained)] = torch.as_tensor(trained, dtype=self.has_id.dtype)

    def content(self, ids: torch.Tensor) -> torch.Tensor:
        """``[..., d]`` content vectors of item ids (any shape)."""
        out: torch.Tensor | None = None
        embs, projs = iter(self.embs), iter(self.projs)
        for k, s in enumerate(self.slots):
            if s.num_ids:
                vec = _bag_mean(next(embs), getattr(self, f"ids_{k}")[ids])
            else:
                proj = next(projs)
                vec = proj(getattr(self, f"text_{k}")[ids].to(proj.weight.dtype))
            out = vec if out is None else out + vec
        assert out is not None
        return out

    def forward(self, id_vectors: torch.Tensor, ids: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Item vectors ``[..., d]`` from the id embeddings of ``ids``; ``keep`` ``[V + 2]`` drops id rows
        (``item_id_dropout``), on top of the items without training interactions."""
        content = self.content(ids)
        mask = self.has_id if keep is None else self.has_id * keep
        mask = mask[ids].unsqueeze(-1).to(id_vectors.dtype)
        if self.gate is None:
            return mask * id_vectors + content
        a = mask * torch.sigmoid(self.gate(content))
        return a * id_vectors + (1 - a) * content


class UserToken(nn.Module):
    """The user's features -> one vector (the sum over features of the mean embedding of its ids), the
    token the backbone reads before BOS. Input: ``[T, F]`` rows of ``data.features.user_matrix``."""

    def __init__(self, slots: list[FeatureSlot], dim: int, std: float) -> None:
        super().__init__()
        self.widths = [s.width for s in slots]
        self.embs = nn.ModuleList(_embedding(s.num_ids, dim, std) for s in slots)

    @property
    def num_columns(self) -> int:
        return sum(self.widths)

    def unknown(self, n: int, device: torch.device) -> torch.Tensor:
        """``[n, F]`` ids of a user nothing is known about: UNKNOWN in each feature's first column."""
        row = torch.full((self.num_columns,), PAD, dtype=torch.long, device=device)
        row[np.cumsum([0, *self.widths[:-1]]).tolist()] = UNKNOWN
        return row.expand(n, -1)

    def forward(self, user_features: torch.Tensor) -> torch.Tensor:
        if user_features.shape[-1] != self.num_columns:
            raise ValueError(
                f"user features: {user_features.shape[-1]} ids per user, the model reads {self.num_columns}"
            )
        parts = torch.split(user_features, self.widths, dim=-1)
        out = [_bag_mean(emb, ids) for emb, ids in zip(self.embs, parts, strict=True)]
        return torch.stack(out).sum(0)
