"""The prepared users as a folder of Parquet files: the form a cluster reads (``ray.data.read_parquet``).

One row per user (with ``data.protocol=loo``: per user and split), in user order, cut into files of about
``ITEMS_PER_FILE`` interactions, so that Ray Data reads them in parallel and no reader holds the whole log::

    users/part-00000.parquet   columns: user (int64), raw_user (string), items (list<int64>), split (string)
    users/part-00001.parquet   ...

``UserShards`` describes such a folder with what training needs besides the rows (catalogue size, item ids
and titles, side information), and nothing that grows with the log: the Ray driver hands the folder to Ray
Data and never reads the rows itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metarec_dist.data.features import FeatureTables
from metarec_dist.data.split import SPLIT_NAMES

ITEMS_PER_FILE = 4_000_000  # ~32 MB of item ids per file: parallel reads, bounded reader memory
ROW_GROUP_USERS = 65_536
PART = "part-{:05d}.parquet"


@dataclass
class UserShards:
    folder: str  # a local path or a URI (s3://..., file://...) that every worker can read
    num_items: int
    item_raw_ids: list[str]  # item_raw_ids[i - 1] is the raw id of item i
    item_titles: dict[int, str] | None
    source: str
    split_users: dict[str, int]  # users (rows) per split
    raw_stats: dict = field(default_factory=dict)
    features: FeatureTables | None = None
    new_items: np.ndarray | None = None  # data.protocol=new_items: the held-out item ids (sorted)


def write_users(table: pa.Table, folder: Path, items_per_file: int = ITEMS_PER_FILE) -> list[Path]:
    """Write the per-user ``table`` as ``folder/part-NNNNN.parquet`` files of whole users, in row order."""
    folder.mkdir(parents=True, exist_ok=True)
    lengths = pc.list_value_length(table.column("items")).to_numpy(zero_copy_only=False)
    ends = np.cumsum(lengths, dtype=np.int64)
    # Cut after the first user whose running total passes each multiple of items_per_file.
    cuts = np.searchsorted(ends, np.arange(items_per_file, int(ends[-1]) if len(ends) else 0, items_per_file))
    bounds = np.unique(np.concatenate([[0], cuts + 1, [table.num_rows]])).clip(0, table.num_rows)
    written = []
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        path = folder / PART.format(i)
        pq.write_table(table.slice(int(lo), int(hi - lo)), path, row_group_size=ROW_GROUP_USERS)
        written.append(path)
    if not written:  # an empty table still gives a readable folder (with its schema)
        path = folder / PART.format(0)
        pq.write_table(table, path)
        written.append(path)
    return written


def part_files(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("part-*.parquet"))


def read_users(folder: Path, columns: list[str] | None = None) -> pa.Table:
    """The rows of every part file, in file order (the order they were written in)."""
    files = part_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no part-*.parquet files (an incomplete data cache?)")
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in files])


def split_counts(table: pa.Table) -> dict[str, int]:
    counts = pc.value_counts(table.column("split")).to_pylist()
    found = {c["values"]: int(c["counts"]) for c in counts}
    return {s: found.get(s, 0) for s in SPLIT_NAMES}
