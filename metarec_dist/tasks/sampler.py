"""Per-user sequences -> cold-start tasks (support window of K items + the next Q items), vectorised.

Deterministic under a seed and resumable exactly: the whole state is the numpy generators' state plus a
counter, so ``load_state_dict(state_dict())`` continues the same task stream bit for bit.

With N ranks, every rank holds only its shard of the training users (``shard_of``: user id modulo N) and
samples its share of the meta-batch from it with its own seed (``rank_seed``). ``ShardedTaskSampler`` draws
the same N streams in one process and concatenates them, so a single process reproduces an N-rank run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from metarec_dist.config import TasksConfig
from metarec_dist.tasks.types import MetaBatch, bos_id


class FlatSequences(list):
    """Sequences that are consecutive views of one flat int64 array: ``self[i]`` is
    ``flat[offsets[i]:offsets[i + 1]]``. A ``SequenceStore`` uses ``flat`` as it is instead of copying it,
    so a rank holds its users' items once."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        flat = np.ascontiguousarray(flat, dtype=np.int64)
        super().__init__(np.split(flat, offsets[1:-1]) if len(offsets) > 1 else [])
        self.flat, self.offsets = flat, np.asarray(offsets, dtype=np.int64)


class SequenceStore:
    """All sequences in one flat array plus offsets: slicing many windows is one fancy-index."""

    def __init__(self, sequences: list[np.ndarray]) -> None:
        if isinstance(sequences, FlatSequences):
            self.lengths = np.diff(sequences.offsets)
            self.starts = sequences.offsets[:-1] - sequences.offsets[0]
            self.flat = sequences.flat[sequences.offsets[0] :]
            return
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        self.lengths = lengths
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.flat = np.concatenate(sequences).astype(np.int64) if sequences else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.lengths)


def collate_windows(
    store: SequenceStore,
    users: np.ndarray,
    offsets: np.ndarray,
    support_lens: np.ndarray,
    support_max: int,
    query_size: int,
    bos_id: int,
    query_lens: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Build the left-padded layout of :class:`MetaBatch` for windows ``seq[off : off + K + Q]``.

    ``query_lens`` (default: ``query_size`` for every task) lets a short user's task carry fewer query
    items: the positions after them hold item 0, which is no target for any loss and, the backbone being
    causal, changes no earlier position's hidden state. A support longer than ``support_max`` is an error:
    it would overwrite BOS and shift the layout (no silent truncation)."""
    if len(support_lens) and int(support_lens.max()) > support_max:
        raise ValueError(
            f"a support of {int(support_lens.max())} items does not fit the window of support_max="
            f"{support_max}: keep the most recent support_max items, or raise tasks.support_max"
        )
    length = 1 + support_max + query_size
    pad = support_max - support_lens  # positions before BOS
    j = np.arange(length)[None, :] - pad[:, None] - 1  # index into the window; -1 is BOS
    q = np.full_like(support_lens, query_size) if query_lens is None else query_lens
    valid = (j >= 0) & (j < (support_lens + q)[:, None])
    src = store.starts[users][:, None] + offsets[:, None] + np.clip(j, 0, None)
    # An empty store (one user with no items, e.g. ``recommend`` from the user's features alone) reads a
    # padding item, which ``valid`` masks anyway.
    flat = store.flat if len(store.flat) else np.zeros(1, dtype=store.flat.dtype)
    ids = np.where(valid, flat[np.minimum(src, len(flat) - 1)], 0)
    ids[j == -1] = bos_id
    support_targets = ids[:, 1 : support_max + 1].copy()
    support_targets[support_targets == bos_id] = 0
    return {
        "item_ids": ids,
        "attention_mask": (j >= -1).astype(np.int64),
        "support_targets": support_targets,
        "query_targets": ids[:, support_max + 1 : support_max + 1 + query_size].copy(),
    }


def shard_of(users: np.ndarray, shards: int) -> np.ndarray:
    """The rank that holds each training user: its id modulo the number of ranks. It depends on the id only,
    never on the order in which rows arrive, so a rank's shard is the same in every run (and resume)."""
    return np.asarray(users, dtype=np.int64) % shards


def rank_seed(seed: int, rank: int, world_size: int) -> int | np.random.SeedSequence:
    """The task-stream seed of ``rank``: the run seed itself with one rank (a single process samples as it
    always has), else an independent stream spawned from it."""
    return seed if world_size == 1 else np.random.SeedSequence(seed, spawn_key=(0, rank))


def shared_seed(seed: int) -> np.random.SeedSequence:
    """The stream every rank draws the same shared negatives from (one set per meta-step, as with one
    process)."""
    return np.random.SeedSequence(seed, spawn_key=(1,))


class TaskSampler:
    """Samples meta-batches of tasks from one list of users (a split, or one rank's shard of it).

    ``rank``/``world_size`` number the tasks in the global stream (rank r's k-th task is
    ``k * world_size + r``); ``negatives_seed`` gives the shared negatives their own stream, the same on
    every rank (default: the task stream's generator, as a single process always drew them).
    """

    def __init__(
        self,
        sequences: list[np.ndarray],
        cfg: TasksConfig,
        num_items: int,
        seed: int | np.random.SeedSequence = 0,
        num_negatives: int = 0,
        user_features: np.ndarray | None = None,
        held_out: np.ndarray | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
        negatives_seed: np.random.SeedSequence | None = None,
    ) -> None:
        """``user_features``: ``[len(sequences), F]`` ids of each user's features (row i for sequence i),
        carried by every task of that user; None without user features."""
        self.cfg, self.num_items, self.num_negatives = cfg, num_items, num_negatives
        # Sampled negatives come from the items training may see: never a held-out (new) item.
        self.negative_pool = negative_pool(num_items, held_out)
        self.rank, self.world_size = rank, world_size
        self.store = SequenceStore(sequences)
        if user_features is not None and len(user_features) != len(sequences):
            raise ValueError(f"{len(user_features)} user-feature rows for {len(sequences)} users")
        self.user_features = user_features
        # Every user with a support and at least one query item gives tasks: on e-commerce logs (median
        # 5-6 interactions) requiring a whole query window would leave about half of the users unseen.
        min_len = cfg.support_min + 1
        self.eligible = np.flatnonzero(self.store.lengths >= min_len)
        if len(self.eligible) == 0:
            where = (
                f" on rank {rank} of {world_size} (its shard: {len(sequences)} users)"
                if world_size > 1
                else ""
            )
            raise ValueError(
                f"no user has at least tasks.support_min + 1 = {min_len} interactions{where}; "
                "lower tasks.support_min, use fewer workers or load more data"
            )
        self.seed = seed if isinstance(seed, int) else int(seed.entropy)
        self.rng = np.random.default_rng(seed)
        self.negatives_rng = self.rng if negatives_seed is None else np.random.default_rng(negatives_seed)
        self.num_sampled = 0

    def sample_arrays(self, n: int) -> dict[str, np.ndarray]:
        cfg, rng = self.cfg, self.rng
        users = self.eligible[rng.integers(0, len(self.eligible), size=n)]
        lengths = self.store.lengths[users]
        # A user with room for a whole query after the smallest support gets K items then Q; a shorter
        # user gets K in [support_min, L - 1] and the rest of its items as a shorter (masked) query.
        whole = lengths >= cfg.support_min + cfg.query_size
        k_hi = np.minimum(cfg.support_max, np.where(whole, lengths - cfg.query_size, lengths - 1))
        k = cfg.support_min + np.floor(rng.random(n) * (k_hi - cfg.support_min + 1)).astype(np.int64)
        q = np.minimum(cfg.query_size, lengths - k)
        if cfg.window == "random":
            offsets = np.floor(rng.random(n) * (lengths - k - q + 1)).astype(np.int64)
        else:
            offsets = np.zeros(n, dtype=np.int64)
        arrays = collate_windows(
            self.store, users, offsets, k, cfg.support_max, cfg.query_size, bos_id(self.num_items), q
        )
        local = np.arange(self.num_sampled, self.num_sampled + n)
        arrays["task_ids"] = local * self.world_size + self.rank
        arrays["users"] = users
        if self.user_features is not None:
            arrays["user_features"] = self.user_features[users]
        if self.num_negatives:
            arrays["negatives"] = draw_negatives(
                self.negatives_rng, self.num_negatives, self.num_items, self.negative_pool
            )
        self.num_sampled += n
        return arrays

    def sample(self, n: int) -> MetaBatch:
        return to_meta_batch(self.sample_arrays(n))

    def state_dict(self) -> dict[str, Any]:
        state = {"seed": self.seed, "rng": self.rng.bit_generator.state, "num_sampled": self.num_sampled}
        if self.negatives_rng is not self.rng:
            state["negatives_rng"] = self.negatives_rng.bit_generator.state
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "rng" not in state:  # a sharded stream's state (ShardedTaskSampler): not a KeyError trace
            raise ValueError(stream_mismatch(state, 1))
        self.rng.bit_generator.state = state["rng"]
        # A one-stream state (one process, or a multi-rank checkpoint written before each rank had its own
        # stream; the checkpoint then gives every rank that state) has no shared-negatives stream: every
        # rank keeps its fresh one from the shared seed, so the ranks still draw the same negatives.
        if self.negatives_rng is not self.rng and "negatives_rng" in state:
            self.negatives_rng.bit_generator.state = state["negatives_rng"]
        self.num_sampled = int(state["num_sampled"])


def stream_mismatch(state: dict[str, Any], shards: int) -> str:
    """The resume error for a task stream saved with another ``tasks.shards`` than this run's (``shards``
    streams; 1: one stream, which tasks.shards 0 and 1 both give in one process)."""
    saved = len(state["shards"]) if isinstance(state.get("shards"), list) else 1

    def setting(n: int) -> str:
        return "0 or 1" if n == 1 else str(n)

    return (
        f"the checkpoint's task stream was sampled with tasks.shards={setting(saved)}, this run has "
        f"tasks.shards={setting(shards)}: resume with --set tasks.shards={saved}, or start a new run "
        "(--set runtime.run_name=NEW)"
    )


def negative_pool(num_items: int, held_out: np.ndarray | None) -> np.ndarray | None:
    """The items sampled negatives are drawn from when some are held out of training; None: all items."""
    if held_out is None or not len(held_out):
        return None
    return np.setdiff1d(np.arange(1, num_items + 1), held_out)


def draw_negatives(rng: np.random.Generator, n: int, num_items: int, pool: np.ndarray | None) -> np.ndarray:
    """``n`` uniform negatives from items 1..num_items, or from ``pool`` (the items training may see)."""
    if pool is None:
        return rng.integers(1, num_items + 1, size=n)
    return pool[rng.integers(0, len(pool), size=n)]


class ShardedTaskSampler:
    """N rank samplers in one process: shard r holds the users with ``shard_of(user) == r`` and samples
    ``n / N`` tasks per call with rank r's seed; the draws are concatenated in rank order. A single process
    with ``tasks.shards=N`` thus meets the tasks an N-rank run meets (rank r's share of every meta-batch),
    whatever the shards' sizes, and the same shared negatives."""

    def __init__(
        self,
        sequences: list[np.ndarray],
        users: Sequence[int] | np.ndarray,
        shards: int,
        cfg: TasksConfig,
        num_items: int,
        seed: int = 0,
        num_negatives: int = 0,
        user_features: np.ndarray | None = None,
        held_out: np.ndarray | None = None,
    ) -> None:
        rank_of = shard_of(np.asarray(users), shards)
        self.positions = [np.flatnonzero(rank_of == r) for r in range(shards)]
        self.shards = [
            TaskSampler(
                [sequences[i] for i in pos],
                cfg,
                num_items,
                rank_seed(seed, r, shards),
                0,
                None if user_features is None else user_features[pos],
                rank=r,
                world_size=shards,
            )
            for r, pos in enumerate(self.positions)
        ]
        self.num_negatives, self.num_items = num_negatives, num_items
        self.negative_pool = negative_pool(num_items, held_out)
        self.negatives_rng = np.random.default_rng(shared_seed(seed))

    def sample_arrays(self, n: int) -> dict[str, np.ndarray]:
        if n % len(self.shards):
            raise ValueError(f"{n} tasks cannot be split evenly over {len(self.shards)} shards")
        parts = [s.sample_arrays(n // len(self.shards)) for s in self.shards]
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        out["users"] = np.concatenate([pos[p["users"]] for pos, p in zip(self.positions, parts, strict=True)])
        if self.num_negatives:
            out["negatives"] = draw_negatives(
                self.negatives_rng, self.num_negatives, self.num_items, self.negative_pool
            )
        return out

    def sample(self, n: int) -> MetaBatch:
        return to_meta_batch(self.sample_arrays(n))

    def state_dict(self) -> dict[str, Any]:
        return {
            "shards": [s.state_dict() for s in self.shards],
            "negatives_rng": self.negatives_rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state.get("shards", ())) != len(self.shards):
            raise ValueError(stream_mismatch(state, len(self.shards)))
        for s, part in zip(self.shards, state["shards"], strict=True):
            s.load_state_dict(part)
        self.negatives_rng.bit_generator.state = state["negatives_rng"]


def to_meta_batch(a: dict[str, np.ndarray]) -> MetaBatch:
    neg = a.get("negatives")
    return MetaBatch(
        item_ids=torch.from_numpy(a["item_ids"]),
        attention_mask=torch.from_numpy(a["attention_mask"]),
        support_targets=torch.from_numpy(a["support_targets"]),
        query_targets=torch.from_numpy(a["query_targets"]),
        task_ids=torch.from_numpy(a["task_ids"]),
        negatives=None if neg is None else torch.from_numpy(neg),
        user_features=_tensor(a.get("user_features")),
    )


def _tensor(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))


def prefix_batch(
    sequences: list[np.ndarray],
    shots: int,
    support_max: int,
    bos_id: int,
    user_features: np.ndarray | None = None,
) -> MetaBatch:
    """Evaluation layout: support = each user's first ``shots`` items, no query items (Q = 0).
    The hidden state at position ``support_max`` then scores the user's next item. ``user_features``:
    ``[len(sequences), F]`` feature ids of each user, or None."""
    store = SequenceStore(sequences)
    n = len(sequences)
    k = np.minimum(store.lengths, shots)
    a = collate_windows(store, np.arange(n), np.zeros(n, np.int64), k, support_max, 0, bos_id)
    return to_meta_batch({**a, "task_ids": np.arange(n, dtype=np.int64), "user_features": user_features})
