"""Data pipeline throughput: load + preprocess a generated log, then cut meta-learning tasks from it.

Run: ``metarec bench data --interactions 1000000`` (the command, machine and load recorded with the result),
or ``python -m metarec_dist.bench.data_bench --interactions 1000000 [--format csv]`` (the figures only).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq

from metarec_dist.config import TasksConfig
from metarec_dist.data import DataConfig, prepare_data
from metarec_dist.errors import UserError, check_fits
from metarec_dist.tasks.sampler import TaskSampler

MEAN_LENGTH = 50  # interactions per user, on average
MIN_INTERACTIONS = 1000  # fewer: a split with no users to time (or an empty Parquet file)


LOG_BYTES = 32  # per interaction of make_log's table: four 8-byte columns (the pipeline holds more)


def check_log_fits(interactions: int, what: str | None = None, available: int | None = None) -> None:
    """Refuse a generated log of ``interactions`` that alone would not fit in the memory available now
    (``what``: how the error names it, default ``--interactions N``; ``available``: as :func:`check_fits`).
    10**12 failed as numpy's _ArrayMemoryError traceback; a size numpy can allocate but the machine cannot
    hold would fill memory."""
    name = what or f"--interactions {interactions:,}"
    check_fits(interactions, LOG_BYTES, name, "the generated log alone needs", "interaction", available)


def make_log(interactions: int, seed: int = 0) -> pa.Table:
    """A MovieLens-like log: ~50 interactions per user, skewed item popularity, shuffled rows."""
    rng = np.random.default_rng(seed)
    num_users = max(1, interactions // MEAN_LENGTH)
    num_items = max(100, interactions // 200)
    user = rng.integers(0, num_users, interactions) + 1
    item = (rng.random(interactions) ** 3 * num_items).astype(np.int64) + 1  # popular items are small ids
    timestamp = rng.integers(978_300_000, 1_700_000_000, interactions)
    rating = rng.integers(1, 6, interactions).astype(np.float64)
    return pa.table({"user_id": user, "item_id": item, "rating": rating, "timestamp": timestamp})


def build_tasks(prepared, seed: int = 0, batches: int = 200, batch_size: int = 64) -> tuple[int, float]:
    """Task building as training does it: the real ``TaskSampler`` (tiny config's windows: 1-10 support
    items + 5 query items) over the training users, ``batches`` meta-batches of ``batch_size`` tasks.
    Returns (tasks built, seconds), the sampler's set-up over all sequences included."""
    start = time.perf_counter()
    sampler = TaskSampler(prepared.sequences("train"), TasksConfig(), prepared.num_items, seed)
    for _ in range(batches):
        sampler.sample(batch_size)
    return batches * batch_size, time.perf_counter() - start


def run_data_bench(interactions: int, seed: int = 0, file_format: str = "parquet") -> dict:
    """Time load + preprocess (``rows_per_s``), a cached reload, and task cutting (``tasks_per_s``)."""
    if interactions < MIN_INTERACTIONS:
        raise UserError(f"--interactions must be >= {MIN_INTERACTIONS}, got {interactions}")
    check_log_fits(interactions)
    with tempfile.TemporaryDirectory(prefix="metarec-data-bench-") as tmp:
        table = make_log(interactions, seed)
        path = Path(tmp) / f"log.{file_format}"
        if file_format == "parquet":
            pq.write_table(table, path)
        elif file_format == "csv":
            pv.write_csv(table, path)
        else:
            raise ValueError(f"file_format must be parquet or csv, got {file_format!r}")
        del table
        cfg = DataConfig(format=file_format, path=str(path), cache_dir=str(Path(tmp) / "cache"), seed=seed)

        start = time.perf_counter()
        prepared = prepare_data(cfg)  # cache miss: read, preprocess, split, write the cache
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        prepare_data(cfg)  # cache hit
        cached_s = time.perf_counter() - start

        tasks, task_s = build_tasks(prepared, seed=seed)
        start = time.perf_counter()
        train = prepared.sequences("train")
        sequences_s = time.perf_counter() - start
        return {
            "interactions": interactions,
            "users": prepared.users.num_rows,
            "items": prepared.num_items,
            "file_format": file_format,
            "load_s": round(load_s, 3),
            "rows_per_s": round(interactions / load_s),
            "cached_load_s": round(cached_s, 3),
            "tasks": tasks,
            "task_s": round(task_s, 4),
            "tasks_per_s": round(tasks / max(task_s, 1e-9)),
            "sequences_train_s": round(sequences_s, 3),
            "train_users": len(train),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", default="parquet", choices=["parquet", "csv"])
    args = parser.parse_args(argv)
    try:
        result = run_data_bench(args.interactions, args.seed, args.format)
    except UserError as exc:  # one line, as `metarec bench data` says it, not a traceback
        parser.error(str(exc))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
