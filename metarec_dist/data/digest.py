"""Digests of prepared data that a checkpoint records, so a resume or an evaluation on other data is refused:
the training users' sequences (``train_data_sha256``) and the side-information tables
(``train_features_sha256``). numpy only: a Ray worker computes them too.

The sequence digest of a run of several ranks is the digest of the ranks' own digests in rank order (each
rank holds the users whose id modulo the world size is its rank: ``tasks.sampler.shard_of``);
:func:`sharded_digest` computes it from the whole data, for an evaluation that has no ranks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from metarec_dist.data.features import EncodedFeature, FeatureTables


def sequences_digest(train: list[np.ndarray], users: np.ndarray | None, chunk: int = 65_536) -> str:
    """sha256 of the users' ids and item sequences, in user-id order (the order rows arrive in does not
    count). ``users``: the id of each sequence; None: its list position."""
    ids = np.asarray(users if users is not None else np.arange(len(train)))
    order = np.argsort(ids, kind="stable")
    h = hashlib.sha256(ids[order].astype("<i8").tobytes())
    h.update(np.array([len(train[i]) for i in order], dtype="<i8").tobytes())
    for lo in range(0, len(order), chunk):  # bounded memory: a copy of one chunk's items at a time
        parts = [train[i] for i in order[lo : lo + chunk]]
        if parts:
            h.update(np.concatenate(parts).astype("<i8").tobytes())
    return h.hexdigest()


def combine(rank_digests: Iterable[str]) -> str:
    """The run's digest from each rank's, in rank order (one rank: its own)."""
    digests = list(rank_digests)
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def sharded_digest(train: list[np.ndarray], users: np.ndarray | None, world_size: int) -> str:
    """The digest ``world_size`` ranks record when each holds its shard of these users (id modulo the
    world size), computed from all of them at once."""
    if world_size <= 1:
        return sequences_digest(train, users)
    ids = np.asarray(users if users is not None else np.arange(len(train)), dtype=np.int64)
    rank = ids % world_size
    shards = []
    for r in range(world_size):
        mine = np.flatnonzero(rank == r)
        shards.append(sequences_digest([train[i] for i in mine], ids[mine]))
    return combine(shards)


def features_digest(features: FeatureTables | None) -> str | None:
    """sha256 of the encoded user and item side tables (names, kinds, vocabularies, bucket cut points and
    every row's ids or text); None without declared features. Which users a rank holds is not part of it."""
    if features is None or not (features.user or features.item):
        return None
    h = hashlib.sha256()
    for entity, table in (("user", features.user), ("item", features.item)):
        for name in sorted(table):
            _feature_into(h, entity, table[name])
    return h.hexdigest()


def _feature_into(h: Any, entity: str, f: EncodedFeature) -> None:
    h.update(repr((entity, f.name, f.kind, list(f.vocab), [float(b) for b in f.boundaries])).encode())
    values = np.asarray(f.values)
    h.update(repr(values.shape).encode())
    if values.dtype == object:  # title: text per row
        for text in values.ravel():
            data = str(text).encode()
            h.update(len(data).to_bytes(8, "little") + data)
    else:
        h.update(values.astype("<i8").tobytes())
