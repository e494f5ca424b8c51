"""``prepare_data``: config -> read -> preprocess -> split -> PreparedData, with the Arrow cache."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from metarec_dist.data import cache
from metarec_dist.data.config import DataConfig
from metarec_dist.data.layout import resolve_layout, warn_if_sep_unused
from metarec_dist.data.prepared import PreparedData, loo_users_table, new_items_table, users_table
from metarec_dist.data.preprocess import build_sequences
from metarec_dist.data.readers import RawLog, read_hub, read_layout, read_synthetic
from metarec_dist.data.shards import UserShards, split_counts, write_users
from metarec_dist.data.side import build_feature_tables, feature_files
from metarec_dist.data.split import LOO_MIN_LEN, newest_items, split_users

log = logging.getLogger(__name__)


def prepare_data(cfg: DataConfig) -> PreparedData:
    """Per-user chronological sequences with a cold-start user split, from whatever ``cfg`` names."""
    start = time.perf_counter()
    if cfg.format in ("synthetic", "hub"):
        side = feature_files(cfg, None)
        warn_if_sep_unused(cfg, None, side.values())
        return _prepare(read_synthetic(cfg) if cfg.format == "synthetic" else read_hub(cfg), cfg, side)
    layout = resolve_layout(cfg)
    side = feature_files(cfg, layout)
    warn_if_sep_unused(cfg, layout, side.values())
    key = root = None
    if cfg.cache:
        # The side tables are keyed like the log (path, size, mtime); the declarations are settings.
        root, key = cache.cache_root(cfg), cache.cache_key(layout.files() + list(side.values()), cfg)
        hit = cache.load(root, key)
        if hit is not None:
            cache.repeat_warnings(root, key)
            return hit
    with cache.remembered_warnings() as warnings:
        prepared = _prepare(read_layout(layout, cfg), cfg, side)
    log.info("prepared %s in %.2fs", prepared.source, time.perf_counter() - start)
    if root is not None and key is not None:
        cache.save(prepared, root, key, warnings)
    return prepared


def cached_shards(cfg: DataConfig, repeat: bool = True) -> UserShards | None:
    """The cache entry's user files when ``cfg``'s data is prepared already (reads no rows), else None.
    Checks that the log and side tables exist either way (a missing file is a ``UserError`` here).
    ``repeat``: say again what reading the data warned about (not right after reading it)."""
    if not cfg.cache or cfg.format in ("synthetic", "hub"):
        return None
    layout = resolve_layout(cfg)
    side = feature_files(cfg, layout)
    warn_if_sep_unused(cfg, layout, side.values())
    key = cache.cache_key(layout.files() + list(side.values()), cfg)
    hit = cache.locate(cache.cache_root(cfg), key)
    if hit is not None:
        log.info("user shards: %s", hit.folder)
        if repeat:
            cache.repeat_warnings(cache.cache_root(cfg), key)
    return hit


def prepare_shards(cfg: DataConfig, scratch: Path) -> UserShards:
    """The prepared users as Parquet files, for a cluster to read: the cache entry's own files when the data
    is cached (a hit reads no rows at all), else written to ``scratch/users`` (the caller owns ``scratch``).
    The rows are read here only when they must be prepared (a cache miss, synthetic or Hub data)."""
    hit = cached_shards(cfg)
    if hit is not None:
        return hit
    prepared = prepare_data(cfg)  # a cacheable log: this writes the entry (or logs why it could not)
    hit = cached_shards(cfg, repeat=False)
    if hit is not None:
        return hit
    table = prepared.table()
    folder = Path(scratch) / "users"
    write_users(table, folder)
    return UserShards(
        folder=str(folder),
        num_items=prepared.num_items,
        item_raw_ids=prepared.item_raw_ids,
        item_titles=prepared.item_titles,
        source=prepared.source,
        split_users=split_counts(table),
        raw_stats=prepared.raw_stats,
        features=prepared.features,
        new_items=prepared.new_items,
    )


def load_interactions(cfg: DataConfig) -> datasets.Dataset:
    """The normalised log, before any preprocessing, in file order: user, item (int64, or string with
    data.string_ids), timestamp (float64; the row number for ordered rows), and rating (float64)
    when the source has one. For inspection and custom pipelines; ``prepare_data`` is the fast path."""
    if cfg.format == "synthetic":
        raw = read_synthetic(cfg)
    elif cfg.format == "hub":
        raw = read_hub(cfg, ratings=True)
    else:
        raw = read_layout(resolve_layout(cfg), cfg, ratings=True)
    columns = {"user": raw.user, "item": raw.item, "timestamp": raw.time}
    if raw.rating is not None:
        columns["rating"] = raw.rating
    return datasets.Dataset(pa.table(columns), fingerprint=uuid.uuid4().hex)


def _prepare(raw: RawLog, cfg: DataConfig, side: dict) -> PreparedData:
    seqs = build_sequences(raw, cfg)
    new_items = None
    if cfg.protocol == "loo":
        table = loo_users_table(seqs)
        short = int((np.diff(seqs.offsets) < LOO_MIN_LEN).sum())
        seqs.raw_stats["loo_train_only_users"] = short  # too short to hold out two items: training only
        if short:
            log.info("leave-one-out: %d users with fewer than %d interactions only train", short, LOO_MIN_LEN)
    else:
        codes = split_users(seqs.first_time, cfg.split, cfg.valid_frac, cfg.test_frac, cfg.seed)
        if cfg.protocol == "new_items":
            assert seqs.item_first_time is not None  # build_sequences computes it for this protocol
            new_items = newest_items(seqs.item_first_time, cfg.held_out_item_frac)
            table, emptied = new_items_table(seqs, codes, new_items)
            seqs.raw_stats.update({"new_items": len(new_items), "new_items_emptied_train_users": emptied})
            log.info(
                "new items: %d of %d items held out of training (%d training users had only those)",
                len(new_items),
                len(seqs.item_raw),
                emptied,
            )
        else:
            table = users_table(seqs, codes)
    titles = None
    if raw.titles:
        titles = {
            i + 1: t
            for i, raw_id in enumerate(seqs.item_raw.to_pylist())
            if (t := raw.titles.get(raw_id)) is not None
        }
    num_items = len(seqs.item_raw)
    return PreparedData(
        # An explicit fingerprint: otherwise datasets hashes the whole table (0.3 s per 10M items).
        users=datasets.Dataset(table, fingerprint=uuid.uuid4().hex),
        num_items=num_items,
        item_raw_ids=seqs.item_raw.to_pylist(),
        item_titles=titles or None,
        source=raw.source,
        raw_stats=seqs.raw_stats,
        features=build_feature_tables(cfg, side, seqs.user_raw, seqs.item_raw),
        new_items=new_items,
    )
