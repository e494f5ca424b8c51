"""The result of data preparation: one row per user, plus the item id mapping and titles.

``PreparedData`` is the Arrow-backed record that the cache saves and Ray Data streams from; ``UserSplits``
is what training and evaluation read: the per-user sequences of the three user groups as numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metarec_dist.data.features import FeatureTables
from metarec_dist.data.preprocess import Sequences
from metarec_dist.data.split import SPLIT_NAMES, UserSplits, leave_one_out


@dataclass
class PreparedData:
    # Columns: user (int64, 0..U-1), raw_user (string), items (list<int64>, ids 1..num_items,
    # chronological), split (string: "train" | "valid" | "test"). One row per user, except with
    # data.protocol=loo: one row per (user, split), each a prefix of the user's history (loo_users_table).
    users: datasets.Dataset
    num_items: int
    item_raw_ids: list[str]  # item_raw_ids[i - 1] is the raw id of item i
    item_titles: dict[int, str] | None  # remapped item id -> title, when metadata was found
    source: str  # what was loaded, for logs
    raw_stats: dict = field(default_factory=dict)  # counts before the min-history drop (stats.py)
    features: FeatureTables | None = None  # declared side information (data.user/item_features)
    # data.protocol=new_items: the held-out item ids (sorted), already removed from the training rows.
    new_items: np.ndarray | None = None

    def table(self) -> pa.Table:
        # Zero-copy for the Dataset built here or memory-mapped from the cache; a Dataset that was
        # filtered/shuffled by the caller goes through its indices mapping.
        return self.users.with_format("arrow")[:]

    def sequences(self, split: str) -> list[np.ndarray]:
        """int64 item arrays of that split's users, in user order (views into one flat array)."""
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
        table = self.table()
        chosen = table.filter(pc.equal(table.column("split"), split)).column("items")
        offsets, values = flat_items(chosen)
        return np.split(values, offsets[1:-1]) if len(chosen) else []  # no users: none, not one empty

    def user_splits(self) -> UserSplits:
        splits = UserSplits(
            *(self.sequences(s) for s in SPLIT_NAMES),
            self.num_items,
            self.item_titles,
            self.item_raw_ids,
            new_items=self.new_items,
            train_users=self.split_users("train"),
        )
        splits.features = self.split_features()
        return splits

    def split_features(self) -> FeatureTables | None:
        """The feature tables with each split's user ids (numpy only)."""
        if self.features is None:
            return None
        return self.features.with_split_users({s: self.split_users(s) for s in SPLIT_NAMES})

    def split_users(self, split: str) -> np.ndarray:
        """User ids (0..U-1) in that split."""
        table = self.table()
        mask = pc.equal(table.column("split"), split)
        return table.filter(mask).column("user").to_numpy()


def flat_items(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A list<int64> column -> (offsets int64 of len rows+1, values int64), without Python loops."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.values.to_numpy()
    # A sliced/filtered list array keeps its parent's values: rebase onto the first offset.
    values = values[offsets[0] : offsets[-1]]
    return offsets - offsets[0], values


def users_table(seqs: Sequences, split_codes: np.ndarray) -> pa.Table:
    num_users = len(seqs.offsets) - 1
    return _rows_table(np.arange(num_users, dtype=np.int64), seqs.offsets, seqs.items, seqs, split_codes)


def loo_users_table(seqs: Sequences) -> pa.Table:
    """The leave-one-out table (``split.leave_one_out``): up to three rows per user, each a prefix of its
    history (train: all but the last two items, valid: all but the last, test: all), so training, Ray Data
    and evaluation read the held-out targets' absence straight from the ``split`` column."""
    users, prefix, codes = leave_one_out(np.diff(seqs.offsets))
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(prefix, out=offsets[1:])
    # Row r takes items[start_u : start_u + prefix_r]: one gather for all rows.
    src = np.repeat(seqs.offsets[users] - offsets[:-1], prefix) + np.arange(int(offsets[-1]))
    return _rows_table(users, offsets, seqs.items[src], seqs, codes)


def new_items_table(seqs: Sequences, split_codes: np.ndarray, new_items: np.ndarray) -> tuple[pa.Table, int]:
    """The cold-start users table with the ``new_items`` removed from every TRAINING user's sequence (the
    remaining items keep their order); validation and test users keep their whole history. A training user
    left with no item has no row. Returns the table and the number of such users."""
    lengths = np.diff(seqs.offsets)
    is_new = np.zeros(len(seqs.item_raw) + 1, dtype=bool)
    is_new[new_items] = True
    train_row = np.repeat(split_codes == 0, lengths)
    keep = ~(is_new[seqs.items] & train_row)
    kept = np.add.reduceat(keep.astype(np.int64), seqs.offsets[:-1]) if len(keep) else lengths
    kept = np.where(lengths > 0, kept, 0)  # reduceat reads one element for an empty segment
    users = np.flatnonzero(kept > 0)
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(kept[users], out=offsets[1:])
    table = _rows_table(users, offsets, seqs.items[keep], seqs, split_codes[users])
    return table, int(len(lengths) - len(users))


def _rows_table(
    users: np.ndarray, offsets: np.ndarray, items: np.ndarray, seqs: Sequences, split_codes: np.ndarray
) -> pa.Table:
    total = int(offsets[-1])
    offsets_type = pa.int32() if total < 2**31 else pa.int64()
    list_type = pa.ListArray if offsets_type == pa.int32() else pa.LargeListArray
    column = list_type.from_arrays(pa.array(offsets, offsets_type), pa.array(items, pa.int64()))
    same_users = len(users) == len(seqs.offsets) - 1
    return pa.table(
        {
            "user": pa.array(users),
            "raw_user": seqs.user_raw if same_users else seqs.user_raw.take(pa.array(users)),
            "items": column,
            "split": pa.array(SPLIT_NAMES, pa.string()).take(pa.array(split_codes.astype(np.int64))),
        }
    )
