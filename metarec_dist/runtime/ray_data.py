"""The prepared users through Ray Data: the driver opens the Parquet files lazily, each rank reads its shard.

Driver (``user_datasets``): one ``ray.data.read_parquet`` over the user files, and per rank a filtered view
of it (the training users with ``user % world_size == rank``, ``tasks.sampler.shard_of``), plus the
validation users. Nothing is read on the driver: Ray Data's read tasks stream the files to the workers.

Worker (``read_shard``, ``read_first_users``): the rank iterates its own dataset and sorts what arrives by
user id. Ray Data delivers blocks in no fixed order and a rank's set of users is fixed by their ids, so a
rank holds the same users in the same order in every run and after every restart: its task stream, and a
resumed run, are exact. Why not Ray Train's ``streaming_split``: it hands blocks to whichever rank asks
first, so which users a rank gets would change from run to run (and on a restart).

Each rank reads every file once and keeps 1/N of the rows (the read costs N passes over the files in all,
spread over the cluster's CPUs; the memory of a rank is its shard).

Ray Data's Parquet reader (the V2 datasource, the default in the pinned Ray 2.60) lists the files of every
execution by reading their footers on a pool of ``RAY_DATA_PARQUET_FOOTER_NUM_ACTORS`` actors, 32 by
default: 32 new Python processes per dataset a rank iterates, 4 executions (and ~130 actor starts) for a
2-rank run. The prepared users are a handful of files, and one actor already reads up to
``RAY_DATA_PARQUET_FOOTER_IO_CONCURRENCY`` (128) footers at a time, so the driver asks for one (a value set
in the environment wins; ``read_parquet`` reads it on the driver and the plan carries it). Measured on a
2-core machine in docs/benchmarks.md, "Ray Data's Parquet footer actors".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metarec_dist.data.prepared import flat_items
from metarec_dist.tasks.sampler import FlatSequences

COLUMNS = ["user", "items", "split"]
BATCH_ROWS = 4096
FOOTER_ACTORS = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"  # read by read_parquet, on the driver


def user_datasets(shards: Any, world_size: int) -> dict[str, Any]:
    """``train_<r>`` for every rank r (its shard of the training users) and ``valid``; lazy."""
    import ray.data

    if shards.split_users.get("train", 0) == 0:
        raise ValueError(f"{shards.source}: the training split has no users")
    with _env_default(FOOTER_ACTORS, "1"):
        users = ray.data.read_parquet(shards.folder).select_columns(COLUMNS)
    out = {
        train_name(r): users.map_batches(
            select_rows,
            batch_format="pyarrow",
            fn_kwargs={"split": "train", "rank": r, "world_size": world_size},
        )
        for r in range(world_size)
    }
    out["valid"] = users.map_batches(select_rows, batch_format="pyarrow", fn_kwargs={"split": "valid"})
    return out


@contextmanager
def _env_default(key: str, value: str) -> Iterator[None]:
    """``key=value`` in this process's environment for the block, unless the user has set ``key``."""
    if key in os.environ:
        yield
        return
    os.environ[key] = value
    try:
        yield
    finally:
        os.environ.pop(key, None)


def train_name(rank: int) -> str:
    return f"train_{rank}"


def select_rows(batch: pa.Table, split: str, rank: int = 0, world_size: int = 1) -> pa.Table:
    """The rows of ``split`` that belong to ``rank`` (user id modulo ``world_size``): user and items."""
    mask = pc.equal(batch.column("split"), split)
    if world_size > 1:
        mask = pc.and_(mask, pc.equal(pc.modulo(batch.column("user"), world_size), rank))
    return batch.filter(mask).select(["user", "items"])


@dataclass
class UserRows:
    """Users in id order and their item sequences (views into one flat int64 array)."""

    users: np.ndarray
    sequences: list[np.ndarray]
    flat: np.ndarray

    @property
    def nbytes(self) -> int:
        """What the rows hold in arrays (ids, items, offsets), without Python object overhead."""
        return int(self.users.nbytes + self.flat.nbytes + 8 * (len(self.users) + 1))


def to_user_rows(tables: list[pa.Table]) -> UserRows:
    """Rows received in any order -> users sorted by id; the result depends only on the set of rows."""
    table = pa.concat_tables(tables) if tables else pa.table({"user": pa.array([], pa.int64()), "items": []})
    table = table.take(pc.sort_indices(table.column("user")))
    offsets, values = flat_items(table.column("items"))
    sequences = FlatSequences(values, offsets)
    return UserRows(table.column("user").to_numpy().astype(np.int64), sequences, sequences.flat)


def _batches(name: str) -> Any:
    import ray.train

    shard = ray.train.get_dataset_shard(name)
    return shard.iter_batches(batch_size=BATCH_ROWS, batch_format="pyarrow")


def read_shard(name: str) -> UserRows:
    """All rows of dataset ``name`` (this rank's training shard), sorted by user id."""
    return to_user_rows(list(_batches(name)))


def read_first_users(name: str, limit: int) -> UserRows:
    """The ``limit`` users with the smallest ids of dataset ``name`` (the validation users a rank evaluates,
    as a single process takes ``valid[:limit]``); holds at most ``limit`` + one batch of rows at a time."""
    kept: pa.Table | None = None
    for batch in _batches(name):
        table = batch if kept is None else pa.concat_tables([kept, batch])
        kept = table.take(pc.sort_indices(table.column("user"))[:limit])
    return to_user_rows([] if kept is None else [kept])


def rank_data_footprint(rows: dict[str, UserRows]) -> dict[str, float]:
    """MB of array data a rank holds per dataset (``bench scale`` reads it; RSS includes more)."""
    return {f"data_mb/{name}": r.nbytes / 2**20 for name, r in rows.items()}
