"""The item cold-start protocols (``new-items``, ``mixed``; see ``eval/new_items.py``) in the shape of
:class:`~metarec_dist.eval.protocol.ColdStartProtocol`: the same users, shot counts, adaptation search on
validation users and results, with the candidates and relevant sets of the held-out items. Used by
``metarec evaluate --protocol new_items|mixed``, the reproduction driver and the trainer's validation of a
model trained with ``data.protocol: new_items``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from metarec_dist.config import EvalConfig
from metarec_dist.data.split import UserSplits
from metarec_dist.eval.new_items import ContentKNNScorer, NewItemBatches, RandomScorer
from metarec_dist.eval.protocol import ColdStartProtocol
from metarec_dist.eval.stats import MethodResult

ITEM_PROTOCOLS = ("new-items", "mixed")
RANDOM, CONTENT_KNN = "random", "content-knn"


@dataclass
class NewItemsProtocol(ColdStartProtocol):
    """Candidates: the held-out items only; relevant: the new items the user interacts with after its
    support of K old items."""

    name: ClassVar[str] = "new-items"
    mixed: ClassVar[bool] = False
    split_hint = "training users never saw the new items, but they are not cold-start users"

    @classmethod
    def build(
        cls, splits: UserSplits, shots: Sequence[int], support_max: int, eval_cfg: EvalConfig
    ) -> NewItemsProtocol:
        if splits.new_items is None or len(splits.new_items) == 0:
            raise ValueError(
                f"the {cls.name} protocol needs held-out items: train the model with "
                "--set data.protocol=new_items"
            )
        return cls(splits, shots, support_max, eval_cfg)

    @property
    def new_items(self) -> np.ndarray:
        assert self.splits.new_items is not None  # build() checked
        return self.splits.new_items

    def empty_split(self, split: str) -> str:
        return f"no {split} users: data.{split}_frac is 0?"

    def batches(
        self,
        sequences: list[np.ndarray],
        ks: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        user_features: np.ndarray | None = None,
    ) -> NewItemBatches:
        """The held-out items' candidates and relevant sets (``eval/new_items.py``), cut into batches of
        users that run wherever :meth:`ColdStartProtocol.per_user`'s runner puts them, scored on ``device``
        (None: the protocol's)."""
        options = self.shot_batch_options(ks, device, user_features)
        return NewItemBatches.build(
            self.splits.num_items, self.new_items, sequences, mixed=self.mixed, **options
        )

    def facts(self) -> dict[str, Any]:
        return {"protocol": self.name, "new_items": len(self.new_items)}

    def random(self, split: str = "test", seed: int = 0) -> MethodResult:
        """Uniform random scores (seeded): the floor any method must clear."""
        return self.baseline(RANDOM, RandomScorer(self.splits.num_items, seed), split, {"seed": seed})

    def content_knn(self, split: str = "test", seed: int = 0) -> MethodResult:
        """Cosine between the support's bag of item-feature values and each item's (no training)."""
        if self.splits.features is None or not self.splits.features.item:
            raise ValueError(
                "the content kNN baseline needs item features: declare data.item_features in the config "
                "(e.g. configs/ml100k-features.yaml)"
            )
        scorer = ContentKNNScorer(self.splits.features, self.splits.num_items, seed)
        names = [f.name for f in self.splits.features.item.values() if f.kind != "title"]
        return self.baseline(
            CONTENT_KNN, scorer, split, {"features": names, "tie_break": scorer.tie_break, "seed": seed}
        )

    def baselines(self, split: str = "test", seed: int = 0) -> list[MethodResult]:
        """The baselines of this protocol: content kNN and random (the mixed one adds popularity)."""
        return [self.content_knn(split, seed), self.random(split, seed)]


@dataclass
class MixedProtocol(NewItemsProtocol):
    """Candidates: every item but the support, new and old; relevant: what the user does next. Reports
    ``new@10`` / ``any_new@10``: do new items ever reach the top 10?"""

    name: ClassVar[str] = "mixed"
    mixed: ClassVar[bool] = True

    def baselines(self, split: str = "test", seed: int = 0) -> list[MethodResult]:
        return [*super().baselines(split, seed), self.popularity(split)]


def item_protocol(
    name: str, splits: UserSplits, shots: Sequence[int], support_max: int, eval_cfg: EvalConfig
) -> NewItemsProtocol:
    """``new-items`` or ``mixed``, by name."""
    classes = {c.name: c for c in (NewItemsProtocol, MixedProtocol)}
    if name not in classes:
        raise ValueError(f"unknown item protocol {name!r}; choose one of {', '.join(ITEM_PROTOCOLS)}")
    return classes[name].build(splits, shots, support_max, eval_cfg)
