"""Fast weights: small per-task head adapters on the backbone's final hidden state.

All fast weights of a task live in one flat vector; a meta-batch holds them as ``w [T, P]`` (one row per
task), so the inner loop is a handful of batched matmuls over all tasks at once instead of a Python loop.
The backbone is never touched in the inner loop: adapting a few thousand numbers per user is what makes a
few SGD steps on 1-10 interactions both cheap and hard to overfit.

Each adapter owns a slice of the flat vector and may
- transform the hidden states (``transform``: ``h [T, N, d] -> h' [T, N, d]``), and/or
- add a per-item score bias (``item_bias``: ``-> [T, V]``), and/or
- update the item side of the scores through a slow item factor (``item_features``, see
  :class:`ItemLowRankAdapter`): its ``r`` extra features of the user state are scored against the model's
  learned item factors ``F [V, r]``, i.e. the score table becomes ``[E | F]``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch


class Adapter(ABC):
    """Base class: an identity transform with no bias. Subclasses override what they change."""

    def __init__(self, hidden_size: int, rank: int, num_items: int) -> None:
        self.hidden_size, self.rank, self.num_items = hidden_size, rank, num_items

    @property
    @abstractmethod
    def size(self) -> int:
        """How many fast weights this adapter owns."""

    def init(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.zeros(self.size)

    def transform(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return h

    def item_bias(self, w: torch.Tensor) -> torch.Tensor | None:
        return None

    @property
    def item_factor_dim(self) -> int:
        """Width of the slow item factor this adapter scores against (0: none)."""
        return 0

    def item_features(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``[T, N, item_factor_dim]``: the user's coordinates on the slow item factors (none by default)."""
        return h.new_zeros((*h.shape[:-1], self.item_factor_dim))


class LowRankAdapter(Adapter):
    """``h' = h + (h A) B`` with ``A [d, r]``, ``B [r, d]``: a per-user low-rank residual on the hidden state.

    ``B`` starts at zero so the initial fast weights leave the model unchanged; ``A`` starts random so the
    first inner step already has a useful gradient for ``B``.
    """

    @property
    def size(self) -> int:
        return 2 * self.hidden_size * self.rank

    def init(self, generator: torch.Generator | None = None) -> torch.Tensor:
        d, r = self.hidden_size, self.rank
        a = torch.randn(d * r, generator=generator) / math.sqrt(d)
        return torch.cat([a, torch.zeros(r * d)])

    def transform(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        d, r = self.hidden_size, self.rank
        a = w[:, : d * r].view(-1, d, r)
        b = w[:, d * r :].view(-1, r, d)
        return h + torch.bmm(torch.bmm(h, a), b)


class FiLMAdapter(Adapter):
    """``h' = h * (1 + gamma) + beta``: per-user feature-wise scale and shift (2d numbers)."""

    @property
    def size(self) -> int:
        return 2 * self.hidden_size

    def transform(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        gamma, beta = w[:, None, : self.hidden_size], w[:, None, self.hidden_size :]
        return h * (1 + gamma) + beta


class ItemBiasAdapter(Adapter):
    """A per-user additive score for every item: the most direct way to say "this user likes these"."""

    @property
    def size(self) -> int:
        return self.num_items

    def item_bias(self, w: torch.Tensor) -> torch.Tensor:
        return w


class ItemLowRankAdapter(Adapter):
    """Item side: a per-user rank-r update of the output item table, ``E_t = E + F U_t^T``, with ``F [V, r]``
    a slow item factor (a model parameter, meta-trained, not adapted) and ``U_t [d, r]`` fast. The scores are
    ``h E_t^T = h E^T + (h U_t) F^T``.

    Why this is item-side and the user-side adapters are not: any per-user map of the hidden state ``M_t``
    scores ``h M_t E^T``, i.e. moves the items only within the span of their embeddings ``E``. So does any
    update ``E + E W U_t^T`` built from ``E`` itself. ``F`` is free: it gives every item ``r`` more
    coordinates, learned across users for exactly this purpose, that the shared model does not score at all
    and a user's support moves along (e.g. "the user likes the items that share this latent aspect"). With
    ``F = E W`` it would collapse to a user-side map; the ``bias`` adapter is the full-rank extreme (one fast
    number per item, no sharing across items). ``U`` starts at zero, so the initial fast weights leave the
    model unchanged; its first inner gradient ``h^T (dL/ds) F`` is non-zero since ``F`` starts random.
    """

    @property
    def size(self) -> int:
        return self.hidden_size * self.rank

    @property
    def item_factor_dim(self) -> int:
        return self.rank

    def item_features(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.bmm(h, w.view(-1, self.hidden_size, self.rank))


ADAPTERS: dict[str, type[Adapter]] = {
    "lowrank": LowRankAdapter,
    "film": FiLMAdapter,
    "bias": ItemBiasAdapter,
    "itemlr": ItemLowRankAdapter,
}


class FastHead:
    """The configured adapters, applied in order over consecutive slices of the flat fast-weight vector."""

    def __init__(self, names: list[str], hidden_size: int, rank: int, num_items: int) -> None:
        unknown = [n for n in names if n not in ADAPTERS]
        if unknown:
            raise ValueError(f"model.adapters: unknown {unknown}; choose from {sorted(ADAPTERS)}")
        self.adapters = [ADAPTERS[n](hidden_size, rank, num_items) for n in names]
        offsets = [0]
        for a in self.adapters:
            offsets.append(offsets[-1] + a.size)
        self.slices = [slice(lo, hi) for lo, hi in zip(offsets[:-1], offsets[1:], strict=True)]
        self.size = offsets[-1]
        # Extra columns of the score table (the item-side adapters' slow item factors), after the d of ``E``.
        self.item_factor_dim = sum(a.item_factor_dim for a in self.adapters)

    def init(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.cat([a.init(generator) for a in self.adapters])

    def transform(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The adapted user state ``[T, N, d + item_factor_dim]``: the user-side adapters in order, then the
        item-side adapters' coordinates of that state on their item factors, appended (so one matmul
        against the table ``[E | F]`` scores both sides)."""
        for a, s in zip(self.adapters, self.slices, strict=True):
            h = a.transform(h, w[:, s])
        extra = [
            a.item_features(h, w[:, s])
            for a, s in zip(self.adapters, self.slices, strict=True)
            if a.item_factor_dim
        ]
        return torch.cat([h, *extra], dim=-1) if extra else h

    def item_bias(self, w: torch.Tensor) -> torch.Tensor | None:
        """Summed per-item bias ``[T, V]`` (V = num_items, item id i at column i-1), or None."""
        total = None
        for a, s in zip(self.adapters, self.slices, strict=True):
            b = a.item_bias(w[:, s])
            if b is not None:
                total = b if total is None else total + b
        return total
