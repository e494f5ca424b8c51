"""Interaction log -> per-user chronological item sequences: threshold, sort, dedup, k-core, remap.

All steps are numpy/pandas/Arrow array operations; nothing loops over rows or users in Python.
Order of steps: the rating threshold first (it decides what counts as an interaction), then one
stable sort by (user, time) -- ties keep the file order -- which dedup needs ("first" means the
earliest), then k-core, then the min-history drop, and last the id remapping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from metarec_dist.data.config import DataConfig
from metarec_dist.data.errors import DataError
from metarec_dist.data.readers import RawLog

log = logging.getLogger(__name__)


@dataclass
class Sequences:
    offsets: np.ndarray  # int64, num_users + 1; user u's items are items[offsets[u]:offsets[u + 1]]
    items: np.ndarray  # int64 ids 1..num_items, grouped by user, chronological within a user
    first_time: np.ndarray  # float64 per user: time of the first interaction
    user_raw: pa.Array  # string per user: the id in the file
    item_raw: pa.Array  # string per item: item_raw[i - 1] is the file's id of item i
    raw_stats: dict  # counts before the min-history drop (see stats.py)
    # float64 per item (index i - 1 for item i): time of its first interaction; only computed for
    # data.protocol=new_items, which holds out the newest items.
    item_first_time: np.ndarray | None = None


def encode(values: np.ndarray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Codes 0..K-1 in the sorted order of the raw ids (numeric for integer ids), and the raw ids as
    strings. Sorted codes make the final ids follow the file's ids (MovieLens item 1 stays item 1)."""
    if isinstance(values, np.ndarray):
        if len(values) and values.min() >= 0 and values.max() < max(4 * len(values), 1 << 20):
            # Compact non-negative ids (the usual case): a presence table beats hashing.
            present = np.zeros(int(values.max()) + 1, dtype=bool)
            present[values] = True
            uniques = np.flatnonzero(present)
            rank = np.cumsum(present) - 1
            return rank[values], pa.array(uniques).cast(pa.string())
        codes, uniques = pd.factorize(values, sort=True)
        return codes.astype(np.int64, copy=False), pa.array(uniques).cast(pa.string())
    encoded = pc.dictionary_encode(values)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    order = pc.array_sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)]
    return codes, encoded.dictionary.take(pa.array(order))


def _small(codes: np.ndarray, count: int) -> np.ndarray:
    # numpy's stable sort is a radix sort for 16-bit keys and timsort otherwise: narrow when possible.
    return codes.astype(np.uint16 if count <= 1 << 16 else np.int64, copy=False)


def _argsort_stable(key: np.ndarray) -> np.ndarray:
    """Stable argsort of int64 keys: an unstable (faster) sort, then file order restored among ties."""
    order = np.argsort(key)
    ranked = key[order]
    tie = np.flatnonzero(ranked[1:] == ranked[:-1])
    if tie.size:
        in_tie = np.zeros(len(key), dtype=bool)
        in_tie[tie] = True
        in_tie[tie + 1] = True
        pos = np.flatnonzero(in_tie)  # runs of equal keys stay contiguous: sort them by row number
        order[pos] = order[pos][np.lexsort((order[pos], ranked[pos]))]
    return order


def _sort_user_time(user: np.ndarray, num_users: int, time: np.ndarray) -> np.ndarray:
    """Permutation ordering rows by (user, time, file order)."""
    if len(time) < 2:
        return np.arange(len(time))
    lo, hi = float(time.min()), float(time.max())
    span = hi - lo + 1
    if span * max(num_users, 1) < 2.0**62 and np.array_equal(time, np.floor(time)):
        # Integer times (the usual Unix seconds): one sort on a combined (user, time) key.
        key = user * np.int64(span) + (time - lo).astype(np.int64)
        if np.all(key[1:] >= key[:-1]):
            return np.arange(len(time))
        return _argsort_stable(key)
    order = np.argsort(time, kind="stable")
    return order[np.argsort(_small(user[order], num_users), kind="stable")]


def length_percentiles(lengths: np.ndarray) -> dict:
    if lengths.size == 0:
        return {"seq_len_p10": 0.0, "seq_len_p50": 0.0, "seq_len_p90": 0.0, "seq_len_max": 0}
    p10, p50, p90 = np.percentile(lengths, [10, 50, 90])
    return {
        "seq_len_p10": float(p10),
        "seq_len_p50": float(p50),
        "seq_len_p90": float(p90),
        "seq_len_max": int(lengths.max()),
    }


def build_sequences(raw: RawLog, cfg: DataConfig) -> Sequences:
    """The steps in the order the module docstring gives; ``raw_stats`` describes the log before the
    min-history drop."""
    user, user_ids = encode(raw.user)
    item, item_ids = encode(raw.item)
    num_users, num_items = len(user_ids), len(item_ids)
    filtered: dict[str, int] = {}  # filter -> interactions it dropped, for `metarec data stats`
    user, item, time = _rating_threshold(raw, cfg, user, item, filtered)
    order = _sort_user_time(user, num_users, time)
    user, item, time = user[order], item[order], time[order]
    user, item, time = _dedup(user, item, time, num_items, cfg.dedup, filtered)
    if cfg.kcore > 0:
        before = len(user)
        user, item, time = _kcore(user, item, time, num_users, num_items, cfg.kcore)
        filtered[f"{cfg.kcore}-core"] = before - len(user)

    user_len = np.bincount(user, minlength=num_users)
    raw_stats = _raw_stats(user_len, item, num_items, len(raw), filtered)
    if len(user) == 0:
        raise DataError(_nothing_left(raw, cfg, filtered))
    min_history = cfg.min_history
    user, item, time = _drop_short_histories(raw.source, user, item, time, user_len, min_history, raw_stats)
    return _dense_sequences(user, item, time, user_ids, item_ids, raw_stats, cfg.protocol == "new_items")


def _nothing_left(raw: RawLog, cfg: DataConfig, filtered: dict[str, int]) -> str:
    """Which filter took the last interaction, and the key to loosen (a threshold above every rating, a
    k-core larger than the data holds): not just "no interactions left"."""
    drops = ", ".join(f"{name} dropped {count:,}" for name, count in filtered.items() if count)
    emptied = next(reversed([name for name, count in filtered.items() if count]), "")
    if emptied.startswith("rating"):
        assert raw.rating is not None and cfg.rating_threshold is not None
        hint = (
            f"the ratings here go from {raw.rating.min():g} to {raw.rating.max():g}: lower "
            f"data.rating_threshold (now {cfg.rating_threshold:g})"
        )
    elif emptied.endswith("-core"):
        hint = f"lower data.kcore (now {cfg.kcore})"
    else:
        hint = "loosen data.rating_threshold / data.dedup / data.kcore"
    return f"{raw.source}: no interactions left after filtering ({len(raw):,} read; {drops}); {hint}"


def _rating_threshold(
    raw: RawLog, cfg: DataConfig, user: np.ndarray, item: np.ndarray, filtered: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The interactions rated at least ``data.rating_threshold`` (all of them when it is unset)."""
    time = raw.time
    if cfg.rating_threshold is None:
        return user, item, time
    if raw.rating is None:
        raise DataError(f"{raw.source}: data.rating_threshold is set but this data has no ratings")
    keep = raw.rating >= cfg.rating_threshold
    n_read = len(raw)
    user, item, time = user[keep], item[keep], time[keep]
    filtered[f"rating >= {cfg.rating_threshold:g}"] = n_read - len(time)
    log.info("rating >= %g keeps %d of %d interactions", cfg.rating_threshold, len(time), n_read)
    return user, item, time


def _dedup(
    user: np.ndarray,
    item: np.ndarray,
    time: np.ndarray,
    num_items: int,
    dedup: str,
    filtered: dict[str, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One interaction per (user, item) pair, the ``data.dedup`` one; rows come sorted by (user, time)."""
    if dedup == "keep_all" or not len(user):
        return user, item, time
    key = user * np.int64(num_items) + item
    keep = ~pd.Series(key).duplicated(keep=dedup).to_numpy()
    log.info("dedup=%s drops %d repeated (user, item) interactions", dedup, int((~keep).sum()))
    filtered[f"dedup={dedup}"] = int((~keep).sum())
    return user[keep], item[keep], time[keep]


def _raw_stats(
    user_len: np.ndarray, item: np.ndarray, num_items: int, n_read: int, filtered: dict[str, int]
) -> dict:
    """The counts after the filters, before the min-history drop (``metarec data stats``)."""
    return {
        "users": int(np.count_nonzero(user_len)),
        "items": int(np.count_nonzero(np.bincount(item, minlength=num_items))),
        "interactions": len(item),
        **length_percentiles(user_len[user_len > 0]),
        "read_interactions": n_read,
        "filtered": filtered,
    }


def _drop_short_histories(
    source: str,
    user: np.ndarray,
    item: np.ndarray,
    time: np.ndarray,
    user_len: np.ndarray,
    min_history: int,
    raw_stats: dict,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The users with at least ``data.min_history`` interactions; how many went is added to ``raw_stats``."""
    short = (user_len > 0) & (user_len < min_history)
    raw_stats["dropped_users"] = int(short.sum())
    raw_stats["min_history"] = min_history
    if not short.any():
        return user, item, time
    log.info(
        "dropping %d users with fewer than %d interactions (data.min_history)", int(short.sum()), min_history
    )
    keep = ~short[user]
    user, item, time = user[keep], item[keep], time[keep]
    if len(user) == 0:
        raise DataError(
            f"{source}: no user has at least {min_history} interactions "
            f"(data.min_history); lower it or loosen the filters"
        )
    return user, item, time


def _dense_sequences(
    user: np.ndarray,
    item: np.ndarray,
    time: np.ndarray,
    user_ids: pa.Array,
    item_ids: pa.Array,
    raw_stats: dict,
    item_times: bool,
) -> Sequences:
    """Users 0..U-1 and items 1..I (0 is padding) for the ones left, grouped by user; both maps are
    monotone, so the (user, time) order survives. ``item_times``: also each item's first time."""
    present_users = np.bincount(user, minlength=len(user_ids)) > 0
    user = (np.cumsum(present_users) - 1)[user]
    present_items = np.bincount(item, minlength=len(item_ids)) > 0
    item = np.cumsum(present_items)[item]  # 1-based: 0 is padding
    counts = np.bincount(user)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    item_first_time = None
    if item_times:
        item_first_time = np.full(int(present_items.sum()), np.inf)
        np.minimum.at(item_first_time, item - 1, time)
    return Sequences(
        offsets=offsets,
        items=item.astype(np.int64, copy=False),
        first_time=time[offsets[:-1]],
        user_raw=user_ids.take(pa.array(np.flatnonzero(present_users))),
        item_raw=item_ids.take(pa.array(np.flatnonzero(present_items))),
        raw_stats=raw_stats,
        item_first_time=item_first_time,
    )


def _kcore(user, item, time, num_users: int, num_items: int, k: int):
    """Iterate until every remaining user and item has >= k interactions (dropping one can break another)."""
    before, rounds = len(user), 0
    while len(user):
        user_count = np.bincount(user, minlength=num_users)
        item_count = np.bincount(item, minlength=num_items)
        keep = (user_count[user] >= k) & (item_count[item] >= k)
        if keep.all():
            break
        user, item, time = user[keep], item[keep], time[keep]
        rounds += 1
    log.info("%d-core keeps %d of %d interactions after %d rounds", k, len(user), before, rounds)
    return user, item, time
