"""The Arrow cache of prepared data: hits, invalidation, atomic writes."""

from __future__ import annotations

import json
import os

import datasets
from data_fixtures import EXPECTED, cfg, sequences_by_user, write_csv, write_recbole

from metarec_dist.data import cache, data_stats, pipeline, prepare_data


def _entries(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_second_run_reads_the_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    config = cfg(format="auto", path=str(write_recbole(tmp_path / "ml")), cache=True, cache_dir=str(root))
    first = prepare_data(config)
    assert len(_entries(root)) == 1

    def boom(*args, **kwargs):
        raise AssertionError("the log was read again")

    monkeypatch.setattr(pipeline, "read_layout", boom)
    second = prepare_data(config)
    assert sequences_by_user(second) == EXPECTED
    assert second.users["split"] == first.users["split"]
    assert second.item_titles == first.item_titles
    assert second.item_raw_ids == first.item_raw_ids
    assert second.raw_stats == first.raw_stats
    assert second.source == first.source
    assert [s.tolist() for s in second.sequences("train")] == EXPECTED[:2]
    assert data_stats(second) == data_stats(first)


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("METAREC_CACHE_DIR", str(tmp_path / "env-cache"))
    prepare_data(cfg(format="csv", path=str(write_csv(tmp_path / "log.csv")), cache=True))
    assert len(_entries(tmp_path / "env-cache")) == 1


def test_changed_file_or_setting_misses(tmp_path):
    root = tmp_path / "cache"
    path = write_csv(tmp_path / "log.csv")
    prepare_data(cfg(format="csv", path=str(path), cache=True, cache_dir=str(root)))
    prepare_data(cfg(format="csv", path=str(path), cache=True, cache_dir=str(root), dedup="first"))
    assert len(_entries(root)) == 2
    # Same size, new content and mtime: must not reuse the old entry.
    path.write_text(path.read_text().replace("1,10,5,100", "1,40,5,100"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    fresh = prepare_data(cfg(format="csv", path=str(path), cache=True, cache_dir=str(root)))
    assert len(_entries(root)) == 3
    assert sequences_by_user(fresh)[0] == [3, 4, 2, 1]


def test_failed_write_leaves_no_partial_entry(tmp_path, monkeypatch, caplog):
    root = tmp_path / "cache"
    real_save = datasets.Dataset.save_to_disk
    calls = []

    def flaky_save(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:  # the users' Parquet files are written, then the disk "fills up"
            raise OSError(28, "No space left on device")
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", flaky_save)
    config = cfg(format="csv", path=str(write_csv(tmp_path / "log.csv")), cache=True, cache_dir=str(root))
    prepared = prepare_data(config)  # still succeeds: the cache is only a speed-up
    assert sequences_by_user(prepared) == EXPECTED
    assert _entries(root) == []
    assert "could not cache" in caplog.text


def test_cache_key_ignores_location_settings(tmp_path):
    path = write_csv(tmp_path / "log.csv")
    a = cache.cache_key([path], cfg(format="csv", path=str(path), cache_dir="/x"))
    b = cache.cache_key([path], cfg(format="csv", path=str(path), cache_dir="/y", synthetic_users=3))
    c = cache.cache_key([path], cfg(format="csv", path=str(path), kcore=2))
    assert a == b != c


def test_unreadable_entry_is_ignored(tmp_path):
    root = tmp_path / "cache"
    config = cfg(format="csv", path=str(write_csv(tmp_path / "log.csv")), cache=True, cache_dir=str(root))
    prepare_data(config)
    (entry,) = root.iterdir()
    parts = list((entry / "users").glob("part-*.parquet"))
    assert parts  # the users are Parquet files
    for part in parts:
        part.write_bytes(b"garbage")
    assert sequences_by_user(prepare_data(config)) == EXPECTED  # recomputed...
    assert _entries(root) == [entry.name]
    assert cache.load(root, entry.name) is not None  # ...and the entry rewritten


def test_cache_key_side_table_layout_keys_count_only_when_set(tmp_path, monkeypatch):
    """The side tables' separator / column keys (added after entries were written) are not in the key of a
    config that leaves them unset (its entries stay valid), and change the key when set."""
    path = write_csv(tmp_path / "log.csv")
    layout_keys = ("user_features_sep", "item_features_sep", "user_features_columns", "item_features_columns")
    hashed = []
    real_dumps = json.dumps
    monkeypatch.setattr(json, "dumps", lambda obj, **kw: hashed.append(obj) or real_dumps(obj, **kw))
    base = cache.cache_key([path], cfg(format="csv", path=str(path)))
    assert not set(layout_keys) & set(hashed[-1]["settings"])
    assert "kcore" in hashed[-1]["settings"]  # the capture sees the keyed settings
    for key, value in (("item_features_sep", "|"), ("user_features_columns", ["user_id", "age"])):
        assert cache.cache_key([path], cfg(format="csv", path=str(path), **{key: value})) != base, key
