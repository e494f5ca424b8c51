"""Encoded side information: per feature a vocabulary and one row of ids per user or item.

numpy only (no pyarrow, no datasets), so the trainer and a Ray worker can hold these without the data
stack. Indexing follows the prepared data's ids: user rows are user ids 0..U-1 (the ``user`` column of
``PreparedData.users``); item rows are item ids, with row 0 the padding item (items are 1..num_items).

Ids inside a feature: 0 is padding (the padding item, the tail of a ``token_seq``), 1 is unknown (a missing
value, a category below ``min_count``, a user or item without a row in the side table), 2.. the vocabulary.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import numpy as np

PAD, UNKNOWN = 0, 1
SPECIALS = ["[PAD]", "[UNK]"]


@dataclass
class EncodedFeature:
    name: str
    kind: str  # token | token_seq | float | title
    vocab: list[str]  # vocab[i] is the label of id i; SPECIALS first; empty for title
    # token, float: int64 [N]; token_seq: int64 [N, max_len] (PAD-padded, UNKNOWN first when empty);
    # title: object [N] of str ("" when missing)
    values: np.ndarray
    without_row: int = 0  # users/items with no row in the side table
    missing: int = 0  # rows whose field is empty
    unknown: int = 0  # rows with a category outside the vocabulary (below min_count)
    boundaries: list[float] = field(default_factory=list)  # float: the bucket cut points

    @property
    def num_values(self) -> int:
        """Distinct known values (vocabulary size without padding and unknown; 0 for title)."""
        return max(len(self.vocab) - len(SPECIALS), 0)

    def lookup(self, value: str | float | None) -> int | list[int]:
        """The id(s) of one raw value, as the table encodes it (unknown for anything not in the vocabulary);
        for requests at inference time, e.g. a new user's stated age."""
        if self.kind == "title":
            raise ValueError(f"feature {self.name!r} is text; it has no ids")
        if value is None or isinstance(value, str) and not value.strip():
            return [UNKNOWN] if self.kind == "token_seq" else UNKNOWN
        if self.kind == "float":
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{self.name}={value}: expected a number") from None
            return bucket_ids(np.array([number]), self.boundaries)[0].item()
        index = {v: i for i, v in enumerate(self.vocab)}
        if self.kind == "token_seq":
            tokens = value.split() if isinstance(value, str) else list(value)
            return [index.get(str(t), UNKNOWN) for t in tokens] or [UNKNOWN]
        return index.get(str(value).strip(), UNKNOWN)


@dataclass
class FeatureTables:
    """The declared user and item features, encoded; ``split_users[s][i]`` is the user id (the row of the
    user features) of the i-th user of split ``s`` as ``UserSplits`` lists them."""

    user: dict[str, EncodedFeature] = field(default_factory=dict)
    item: dict[str, EncodedFeature] = field(default_factory=dict)
    split_users: dict[str, np.ndarray] = field(default_factory=dict)

    def with_split_users(self, split_users: dict[str, np.ndarray]) -> FeatureTables:
        return dataclasses.replace(self, split_users=split_users)

    def split_user_matrix(self, split: str) -> np.ndarray | None:
        """``[N, F]`` user-feature ids (``user_matrix``) of the users of ``split`` in ``UserSplits`` order;
        None without user features."""
        if not id_features(self.user) or split not in self.split_users:
            return None
        return user_matrix(self.user)[self.split_users[split]]

    def stats(self) -> list[dict]:
        """One summary per feature, for ``metarec data stats``."""
        rows = []
        for entity, features in (("user", self.user), ("item", self.item)):
            for f in features.values():
                rows.append(
                    {
                        "entity": entity,
                        "name": f.name,
                        "kind": f.kind,
                        "values": f.num_values,
                        "without_row": f.without_row,
                        "missing": f.missing,
                        "unknown": f.unknown,
                    }
                )
        return rows


def bucket_ids(values: np.ndarray, boundaries: list[float]) -> np.ndarray:
    """float -> bucket id: 2 + the number of cut points <= value; NaN (missing) -> UNKNOWN."""
    ids = np.searchsorted(np.asarray(boundaries, dtype=np.float64), values, side="right") + len(SPECIALS)
    return np.where(np.isnan(values), UNKNOWN, ids).astype(np.int64)


def bucket_labels(boundaries: list[float]) -> list[str]:
    if not boundaries:
        return ["all"]
    edges = [f"{b:g}" for b in boundaries]
    return [f"< {edges[0]}"] + [f"[{a}, {b})" for a, b in itertools.pairwise(edges)] + [f">= {edges[-1]}"]


def id_features(features: dict[str, EncodedFeature]) -> list[EncodedFeature]:
    """The features that are ids (every kind but ``title``), in declaration order."""
    return [f for f in features.values() if f.kind != "title"]


def feature_width(feature: EncodedFeature) -> int:
    """Ids per row: 1 for token and float, the padded list length for token_seq."""
    return feature.values.shape[1] if feature.values.ndim == 2 else 1


def user_matrix(features: dict[str, EncodedFeature]) -> np.ndarray:
    """``[U, F]`` int64: the id features side by side in declaration order (``feature_width`` columns
    each), one row per user: what a batch carries for the model's user token."""
    parts = [f.values.reshape(len(f.values), -1) for f in id_features(features)]
    return np.concatenate(parts, axis=1).astype(np.int64)


def encode_user(features: dict[str, EncodedFeature], stated: dict[str, str]) -> np.ndarray:
    """One ``user_matrix`` row for a user described at request time (``{"age": "24", ...}``): each stated
    value looked up in its vocabulary (unknown values -> the unknown id), features not stated -> unknown.
    A name that is no id feature is a ``KeyError`` naming the declared ones."""
    usable = {f.name: f for f in id_features(features)}
    stray = [name for name in stated if name not in usable]
    if stray:
        raise KeyError(
            f"unknown user feature {stray[0]!r}; the declared ones are: {', '.join(usable) or 'none'}"
        )
    row = []
    for name, f in usable.items():
        ids = f.lookup(stated.get(name))
        width = feature_width(f)
        ids = (list(ids) + [PAD] * width)[:width] if isinstance(ids, list) else [ids]
        row.extend(ids)
    return np.asarray(row, dtype=np.int64)
