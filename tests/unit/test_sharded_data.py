"""Users as Parquet shards, each rank's share of them, and the per-rank task streams (issue 14, items 1-2).

The Ray side (read_parquet, one dataset per rank, a real 2-worker run against ``tasks.shards=2`` in one
process, stop-and-resume) is in tests/integration/test_distributed.py; here the pieces it is built from.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from data_fixtures import EXPECTED, cfg, sequences_by_user, write_csv

from metarec_dist.config import TasksConfig, load_config
from metarec_dist.data import cache, pipeline, prepare_data
from metarec_dist.data.shards import part_files, read_users, write_users
from metarec_dist.runtime import ray_data
from metarec_dist.runtime.ray_data import read_first_users, select_rows, to_user_rows
from metarec_dist.tasks.sampler import (
    SequenceStore,
    ShardedTaskSampler,
    TaskSampler,
    rank_seed,
    shard_of,
    shared_seed,
)

TASKS = TasksConfig(support_min=1, support_max=4, query_size=2)


def _synthetic(users: int = 300, seed: int = 0):
    config = load_config(
        "configs/tiny.yaml", [f"data.synthetic_users={users}", f"data.seed={seed}", "logging.wandb=off"]
    )
    return prepare_data(config.data)


# ------------------------------------------------------------------------------------ Parquet shards


def test_users_round_trip_through_parquet_files_of_whole_users(tmp_path):
    prepared = _synthetic()
    table = prepared.table()
    files = write_users(table, tmp_path / "users", items_per_file=2_000)
    assert len(files) > 3 and files == part_files(tmp_path / "users")
    back = read_users(tmp_path / "users")
    assert back.equals(table)  # every row, in order, in files of whole users
    assert sum(pq.read_metadata(f).num_rows for f in files) == table.num_rows


def test_cache_entry_holds_parquet_users_and_a_hit_reads_no_rows(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    config = cfg(format="csv", path=str(write_csv(tmp_path / "log.csv")), cache=True, cache_dir=str(root))
    first = prepare_data(config)
    (entry,) = root.iterdir()
    assert read_users(entry / "users").equals(first.table())

    def no_rows(*args, **kwargs):
        raise AssertionError("the driver read the rows")

    monkeypatch.setattr(pq, "read_table", no_rows)
    monkeypatch.setattr(pipeline, "read_layout", no_rows)
    shards = pipeline.prepare_shards(config, tmp_path / "scratch")
    assert shards.folder == str(entry / "users") and not (tmp_path / "scratch").exists()
    assert shards.num_items == first.num_items and shards.item_raw_ids == first.item_raw_ids
    assert shards.split_users == {
        s: int(np.sum(np.asarray(first.users["split"]) == s)) for s in shards.split_users
    }
    monkeypatch.undo()
    assert sequences_by_user(cache.load(root, entry.name)) == EXPECTED


def test_a_cache_that_cannot_be_written_costs_one_preparation(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("x")
    config = cfg(
        format="csv",
        path=str(write_csv(tmp_path / "log.csv")),
        cache=True,
        cache_dir=str(tmp_path / "not-a-folder"),
    )
    reads = []
    real = pipeline.read_layout
    monkeypatch.setattr(pipeline, "read_layout", lambda *a, **k: reads.append(1) or real(*a, **k))
    shards = pipeline.prepare_shards(config, tmp_path / "scratch")
    assert shards.folder == str(tmp_path / "scratch" / "users") and reads == [1]
    assert read_users(tmp_path / "scratch" / "users").equals(prepare_data(config).table())


def test_uncached_data_is_written_to_the_scratch_folder(tmp_path):
    config = load_config("configs/tiny.yaml", ["data.synthetic_users=50"]).data
    shards = pipeline.prepare_shards(config, tmp_path)
    assert shards.folder == str(tmp_path / "users")
    assert read_users(tmp_path / "users").equals(prepare_data(config).table())
    assert sum(shards.split_users.values()) == 50


# ------------------------------------------------------------------------------------ a rank's shard


def test_rank_shards_partition_the_training_users_by_id(tmp_path):
    prepared = _synthetic()
    write_users(prepared.table(), tmp_path / "users", items_per_file=2_000)
    batches = [pq.read_table(p) for p in part_files(tmp_path / "users")]
    train_users = prepared.split_users("train")
    world = 3
    held = [
        to_user_rows([select_rows(b, "train", rank, world) for b in batches]).users for rank in range(world)
    ]
    assert sorted(np.concatenate(held).tolist()) == sorted(train_users.tolist())  # all, none twice
    for rank, users in enumerate(held):
        assert np.all(shard_of(users, world) == rank) and np.all(np.diff(users) > 0)


class _Recorded:
    """Stands in for ray.data.read_parquet: what the environment said when it was called."""

    def __init__(self) -> None:
        self.footer_actors: list[str | None] = []

    def __call__(self, folder, **kwargs):
        self.footer_actors.append(os.environ.get(ray_data.FOOTER_ACTORS))
        return self

    def select_columns(self, columns):
        assert columns == ray_data.COLUMNS
        return self

    def map_batches(self, *args, **kwargs):
        return self


@pytest.mark.parametrize("user_value", [None, "8"])
def test_the_driver_asks_ray_data_for_one_footer_actor_unless_the_user_set_it(monkeypatch, user_value):
    """Ray 2.60's Parquet reader reads RAY_DATA_PARQUET_FOOTER_NUM_ACTORS when read_parquet is called (on
    the driver); its default, 32 actor processes per dataset execution, cost a 2-rank run ~130 process
    starts (docs/benchmarks.md). Asked for 1 there, unless the user set a value; the driver's environment
    is left as it was."""
    import ray.data

    recorded = _Recorded()
    monkeypatch.setattr(ray.data, "read_parquet", recorded)
    if user_value is None:
        monkeypatch.delenv(ray_data.FOOTER_ACTORS, raising=False)
    else:
        monkeypatch.setenv(ray_data.FOOTER_ACTORS, user_value)
    shards = type("Shards", (), {"split_users": {"train": 5}, "folder": "users", "source": "s"})()
    datasets = ray_data.user_datasets(shards, world_size=2)
    assert set(datasets) == {"train_0", "train_1", "valid"}
    assert recorded.footer_actors == [user_value or "1"]
    assert os.environ.get(ray_data.FOOTER_ACTORS) == user_value


def test_a_ranks_rows_do_not_depend_on_the_order_blocks_arrive_in():
    prepared = _synthetic()
    table = select_rows(prepared.table(), "train", 1, 2)
    blocks = [table.slice(i, 7) for i in range(0, table.num_rows, 7)]
    a = to_user_rows(blocks)
    b = to_user_rows(list(reversed(blocks)))
    shuffled = np.random.default_rng(0).permutation(len(blocks))
    c = to_user_rows([blocks[i] for i in shuffled])
    for other in (b, c):
        assert np.array_equal(a.users, other.users)
        assert all(np.array_equal(x, y) for x, y in zip(a.sequences, other.sequences, strict=True))
    # one flat array holds the items; each sequence and the sampler's store are views of it (no copy)
    assert all(np.shares_memory(s, a.flat) for s in a.sequences if len(s))
    store = SequenceStore(a.sequences)
    assert np.shares_memory(store.flat, a.flat)
    plain = SequenceStore(list(a.sequences))  # a plain list is copied into the same layout
    assert np.array_equal(plain.flat, store.flat) and np.array_equal(plain.starts, store.starts)
    by_user = dict(zip(prepared.split_users("train"), prepared.sequences("train"), strict=True))
    assert all(np.array_equal(by_user[u], s) for u, s in zip(a.users, a.sequences, strict=True))


def test_no_rows_give_an_empty_shard():
    rows = to_user_rows([])
    assert len(rows.users) == 0 and rows.sequences == [] and rows.nbytes == 8


def test_validation_users_a_rank_keeps_are_the_first_by_id(monkeypatch):
    prepared = _synthetic()
    table = select_rows(prepared.table(), "valid")
    blocks = [table.slice(i, 5) for i in range(0, table.num_rows, 5)][::-1]  # arrival order: reversed
    from metarec_dist.runtime import ray_data

    monkeypatch.setattr(ray_data, "_batches", lambda name: iter(blocks))
    first = read_first_users("valid", 8)
    valid = prepared.sequences("valid")
    assert first.users.tolist() == prepared.split_users("valid")[:8].tolist()
    assert all(np.array_equal(a, b) for a, b in zip(first.sequences, valid[:8], strict=True))


# ------------------------------------------------------------------------------------ task streams


def _seqs(n: int = 60, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 40, size=rng.integers(2, 20)) for _ in range(n)]


def test_one_rank_samples_exactly_as_before():
    """World size 1: the run seed itself, task ids 0, 1, 2, ... (tests/unit/test_trajectory.py pins it)."""
    assert rank_seed(7, 0, 1) == 7
    a, b = TaskSampler(_seqs(), TASKS, 40, 7, 5), TaskSampler(_seqs(), TASKS, 40, seed=7, num_negatives=5)
    x, y = a.sample(8), b.sample(8)
    assert torch.equal(x.item_ids, y.item_ids) and torch.equal(x.negatives, y.negatives)
    assert x.task_ids.tolist() == list(range(8))


def test_sharded_sampler_draws_each_ranks_stream_from_its_own_users():
    seqs, users = _seqs(), np.arange(100, 160)
    sharded = ShardedTaskSampler(seqs, users, 2, TASKS, 40, seed=3)
    got = sharded.sample_arrays(8)
    for rank in range(2):
        mine = np.flatnonzero(users % 2 == rank)
        alone = TaskSampler(
            [seqs[i] for i in mine], TASKS, 40, rank_seed(3, rank, 2), rank=rank, world_size=2
        )
        expect = alone.sample_arrays(4)
        part = slice(4 * rank, 4 * rank + 4)
        assert np.array_equal(got["item_ids"][part], expect["item_ids"])
        assert np.array_equal(got["users"][part], mine[expect["users"]])  # positions in the full list
        assert np.all(users[got["users"][part]] % 2 == rank)
    assert sorted(got["task_ids"].tolist()) == list(range(8))  # rank r's k-th task: k * 2 + r


def test_uneven_shards_still_give_every_rank_the_same_number_of_tasks():
    """Rank 0 holds 2 users, rank 1 holds 58: each samples its fixed share, so no rank waits on another."""
    seqs = _seqs()
    users = np.array([0, 2] + [2 * i + 1 for i in range(58)])
    sharded = ShardedTaskSampler(seqs, users, 2, TASKS, 40, seed=0)
    assert [len(s.eligible) for s in sharded.shards] == [2, 58]
    for _ in range(3):
        a = sharded.sample_arrays(6)
        assert [int(np.sum(users[a["users"]] % 2 == r)) for r in (0, 1)] == [3, 3]


def test_a_rank_without_an_eligible_user_is_named():
    with pytest.raises(ValueError, match="on rank 1 of 2"):
        ShardedTaskSampler([np.array([1, 2, 3]), np.array([4])], [0, 1], 2, TASKS, 40)


def test_sharded_stream_resumes_exactly_and_shares_its_negatives():
    seqs, users = _seqs(), np.arange(60)
    a = ShardedTaskSampler(seqs, users, 3, TASKS, 40, seed=5, num_negatives=4)
    a.sample(6)
    state = a.state_dict()
    expected = [a.sample(6) for _ in range(3)]
    b = ShardedTaskSampler(seqs, users, 3, TASKS, 40, seed=99, num_negatives=4)
    b.load_state_dict(state)
    for e in expected:
        got = b.sample(6)
        assert torch.equal(got.item_ids, e.item_ids) and torch.equal(got.task_ids, e.task_ids)
        assert torch.equal(got.negatives, e.negatives)
    # every rank of a real run draws the same negatives from the shared stream as this one process does
    rank = TaskSampler(
        [seqs[i] for i in range(0, 60, 3)],
        TASKS,
        40,
        rank_seed(5, 0, 3),
        4,
        rank=0,
        world_size=3,
        negatives_seed=shared_seed(5),
    )
    fresh = ShardedTaskSampler(seqs, users, 3, TASKS, 40, seed=5, num_negatives=4)
    assert torch.equal(rank.sample(2).negatives, fresh.sample(6).negatives)
    with pytest.raises(ValueError, match="tasks.shards"):
        ShardedTaskSampler(seqs, users, 2, TASKS, 40).load_state_dict(state)


def test_tasks_shards_must_match_the_workers():
    with pytest.raises(ValueError, match="tasks.shards"):
        load_config(
            "configs/tiny.yaml", ["runtime.num_workers=2", "tasks.shards=4", "meta.meta_batch_size=8"]
        )
    with pytest.raises(ValueError, match="multiple of tasks.shards"):
        load_config("configs/tiny.yaml", ["tasks.shards=3", "meta.meta_batch_size=8"])


def test_cloud_storage_gets_a_copy_of_the_user_files(tmp_path):
    """With a URI storage path the workers read the files from there (``file://`` stands in for s3://)."""
    from metarec_dist.runtime.ray_launcher import cluster_readable

    write_users(_synthetic(50).table(), tmp_path / "cache" / "KEY" / "users")
    uri = f"file://{tmp_path}/bucket"
    config = load_config("configs/tiny.yaml", [f"runtime.storage_path={uri}", "runtime.run_name=r1"])
    dest = cluster_readable(str(tmp_path / "cache" / "KEY" / "users"), config)
    assert dest == f"{uri}/r1/data/KEY/users"
    assert read_users(tmp_path / "bucket" / "r1" / "data" / "KEY" / "users").equals(
        read_users(tmp_path / "cache" / "KEY" / "users")
    )
    local = load_config("configs/tiny.yaml", [f"runtime.storage_path={tmp_path / 'runs'}"])
    assert cluster_readable(str(tmp_path / "cache" / "KEY" / "users"), local) == str(
        tmp_path / "cache" / "KEY" / "users"
    )


def test_parquet_users_keep_list_types(tmp_path):
    table = pa.table(
        {
            "user": pa.array([0, 1], pa.int64()),
            "items": pa.array([[1, 2], [3]], pa.list_(pa.int64())),
            "split": ["train", "valid"],
        }
    )
    write_users(table, tmp_path / "u")
    assert read_users(tmp_path / "u").schema.field("items").type == pa.list_(pa.int64())


def test_a_local_cluster_leaves_cpus_for_the_reads(monkeypatch):
    """Rank r's rows come through Ray Data read tasks, which need a CPU the workers do not hold."""
    import os

    from metarec_dist.runtime.ray_launcher import local_cpus

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert local_cpus(load_config("configs/tiny.yaml", ["runtime.num_workers=2"])) == 4
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert local_cpus(load_config("configs/tiny.yaml", ["runtime.num_workers=2"])) == 16
