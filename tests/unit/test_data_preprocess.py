"""Threshold, dedup, k-core, stable order, id remapping, cold-start split, stats, synthetic data."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import EXPECTED, ROWS, cfg, sequences_by_user, write_csv

from metarec_dist.data import DataConfig, DataError, PreparedData, data_stats, format_stats, prepare_data
from metarec_dist.data.preprocess import _argsort_stable, _sort_user_time
from metarec_dist.data.split import split_users
from metarec_dist.data.synthetic import make_synthetic_sequences


def _prepare(tmp_path, rows=ROWS, **kwargs) -> PreparedData:
    return prepare_data(cfg(format="csv", path=str(write_csv(tmp_path / "log.csv", rows=rows)), **kwargs))


def _raw_sequences(prepared: PreparedData) -> dict[str, list[int]]:
    """raw user -> raw item ids, to compare without caring about the remapping."""
    ids = prepared.item_raw_ids
    return {
        u: [int(ids[i - 1]) for i in items]
        for u, items in zip(prepared.users["raw_user"], prepared.users["items"], strict=True)
    }


def test_defaults_keep_everything(tmp_path):
    prepared = _prepare(tmp_path)
    assert sequences_by_user(prepared) == EXPECTED
    stats = data_stats(prepared)
    assert (stats["users"], stats["items"], stats["interactions"]) == (4, 4, 10)
    assert DataConfig().rating_threshold is None and DataConfig().kcore == 0
    assert DataConfig().dedup == "keep_all"


def test_rating_threshold_keeps_ratings_at_or_above(tmp_path):
    prepared = _prepare(tmp_path, rating_threshold=4.0)
    assert _raw_sequences(prepared) == {"1": [30, 10], "2": [10], "3": [40], "4": [30]}


@pytest.mark.parametrize(
    ("policy", "user1"), [("keep_all", [30, 10, 20, 10]), ("first", [30, 10, 20]), ("last", [30, 20, 10])]
)
def test_dedup_policies(tmp_path, policy, user1):
    assert _raw_sequences(_prepare(tmp_path, dedup=policy))["1"] == user1


def test_kcore_is_iterative(tmp_path):
    # 2-core: item 40 has one interaction -> dropped; then user 3 has one left -> dropped;
    # then item 10 still has >= 2, but nothing else breaks.
    rows = [
        (1, 10, 1.0, 1),
        (1, 20, 1.0, 2),
        (2, 10, 1.0, 3),
        (2, 20, 1.0, 4),
        (3, 10, 1.0, 5),
        (3, 40, 1.0, 6),
        (4, 10, 1.0, 7),
        (4, 20, 1.0, 8),
    ]
    prepared = _prepare(tmp_path, rows=rows, kcore=2)
    assert _raw_sequences(prepared) == {"1": [10, 20], "2": [10, 20], "4": [10, 20]}
    assert prepared.item_raw_ids == ["10", "20"]
    # A chain that unravels over several rounds ends empty: a clear error.
    chain = [(1, 10, 1.0, 1), (1, 20, 1.0, 2), (2, 20, 1.0, 3), (2, 30, 1.0, 4), (3, 30, 1.0, 5)]
    with pytest.raises(DataError, match="no interactions left"):
        _prepare(tmp_path, rows=chain, kcore=2)


def test_ties_keep_file_order_and_sort_is_stable():
    rng = np.random.default_rng(0)
    user = rng.integers(0, 50, 5000)
    time = rng.integers(0, 20, 5000).astype(np.float64)  # many ties
    order = _sort_user_time(user, 50, time)
    assert np.array_equal(order, np.lexsort((np.arange(5000), time, user)))
    fractional = time + 0.5  # the non-integer path
    assert np.array_equal(_sort_user_time(user, 50, fractional), order)
    key = rng.integers(0, 30, 1000)
    assert np.array_equal(_argsort_stable(key), np.argsort(key, kind="stable"))


def test_min_history_drops_short_users_and_logs_the_count(tmp_path, caplog):
    rows = [*ROWS, (5, 10, 1.0, 1), (6, 20, 1.0, 2)]  # users 5 and 6 have one interaction each
    with caplog.at_level(logging.INFO, logger="metarec_dist.data"):
        prepared = _prepare(tmp_path, rows=rows, min_history=2)
    assert "dropping 2 users with fewer than 2 interactions" in caplog.text
    assert prepared.users["raw_user"] == ["1", "2", "3", "4"]
    assert prepared.users["user"] == [0, 1, 2, 3]  # ids stay dense
    stats = data_stats(prepared)
    assert stats["users"] == 6 and stats["interactions"] == 12  # counted before the drop
    assert stats["dropped_users"] == 2
    assert stats["train_users"] + stats["valid_users"] + stats["test_users"] == 4
    assert "dropped       2 users" in format_stats(stats)
    with pytest.raises(DataError, match="no user has at least 9 interactions"):
        _prepare(tmp_path, rows=rows, min_history=9)


def test_time_split_holds_out_the_newest_users():
    first = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0])
    codes = split_users(first, "time", 0.2, 0.2, seed=0)
    assert set(np.flatnonzero(codes == 2)) == {2, 6}  # times 9 and 8
    assert set(np.flatnonzero(codes == 1)) == {4, 8}  # times 7 and 6
    assert (codes == 0).sum() == 6


def test_random_split_is_seeded_and_disjoint():
    first = np.zeros(1000)
    a = split_users(first, "random", 0.1, 0.2, seed=1)
    assert np.array_equal(a, split_users(first, "random", 0.1, 0.2, seed=1))
    assert not np.array_equal(a, split_users(first, "random", 0.1, 0.2, seed=2))
    assert np.bincount(a).tolist() == [700, 100, 200]


def test_split_too_small_is_an_error():
    with pytest.raises(DataError, match="leave none for training"):
        split_users(np.zeros(2), "time", 0.3, 0.3, seed=0)


def test_split_users_are_disjoint_in_prepared_data(tmp_path):
    prepared = _prepare(tmp_path, split="random", seed=3)
    ids = [set(prepared.split_users(s).tolist()) for s in ("train", "valid", "test")]
    assert set.union(*ids) == {0, 1, 2, 3}
    assert sum(len(s) for s in ids) == 4


def test_an_empty_split_has_no_users_not_one_empty_one(tmp_path):
    splits = _prepare(tmp_path, valid_frac=0.0).user_splits()
    assert splits.valid == [] and len(splits.train) + len(splits.test) == 4


def test_stats_and_format(tmp_path):
    stats = data_stats(_prepare(tmp_path))
    assert stats["seq_len_max"] == 4 and stats["seq_len_p50"] == 2.0
    assert (stats["train_users"], stats["valid_users"], stats["test_users"]) == (2, 1, 1)
    assert stats["train_interactions"] == 6
    text = format_stats(stats)
    assert "users         4" in text and "train 2 / valid 1 / test 1" in text


def test_stats_count_with_thousands_separators():
    text = format_stats({"users": 943, "items": 1682, "interactions": 100000, "seq_len_max": 737})
    assert "1,682" in text and "100,000" in text


def test_synthetic_goes_through_the_same_pipeline():
    config = DataConfig(
        format="synthetic", synthetic_users=50, synthetic_items=30, synthetic_groups=3, seed=4
    )
    prepared = prepare_data(config)
    expected = make_synthetic_sequences(num_users=50, num_items=30, num_groups=3, seed=4)
    assert prepared.users.num_rows == 50
    # Every item appears, so remapping keeps the ids; users keep their order.
    assert prepared.num_items == 30
    assert [list(s) for s in prepared.users["items"]] == [s.tolist() for s in expected]
    assert prepared.users["split"][-5:] == ["test"] * 5  # time split: the last users are the newest
    assert sum(len(prepared.sequences(s)) for s in ("train", "valid", "test")) == 50
    assert "synthetic" in prepared.source


def test_synthetic_dedup_and_kcore_apply(tmp_path):
    prepared = prepare_data(DataConfig(format="synthetic", synthetic_users=40, dedup="first", kcore=3))
    for items in prepared.users["items"]:
        assert len(items) == len(set(items)) and len(items) >= 3


ML100K = Path(os.environ.get("METAREC_ML100K", "/work/shared/data/ml-100k"))


@pytest.mark.skipif(not (ML100K / "ml-100k.inter").is_file(), reason="needs a RecBole ml-100k copy")
def test_real_ml100k_counts_when_available(tmp_path):
    prepared = prepare_data(DataConfig(format="auto", path=str(ML100K), cache=False))
    stats = data_stats(prepared)
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100_000)
    assert prepared.item_titles[1] == "Toy Story"


def test_stats_say_what_each_filter_dropped(tmp_path):
    stats = data_stats(_prepare(tmp_path, rating_threshold=2.0, dedup="first", kcore=1))
    # ROWS: 10 interactions, one rated below 2 (user 1's item 20), one repeated (user 1's item 10)
    assert stats["read_interactions"] == 10 and stats["interactions"] == 8
    assert stats["filtered"] == {"rating >= 2": 1, "dedup=first": 1, "1-core": 0}
    text = format_stats(stats)
    assert "filtered      10 interactions read; rating >= 2 dropped 1, dedup=first dropped 1" in text
    assert "core" not in text  # a filter that dropped nothing is not listed
    assert "filtered" not in format_stats(data_stats(_prepare(tmp_path)))
