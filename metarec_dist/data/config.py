"""The ``data:`` config section: where the interaction log comes from and how it is preprocessed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

FORMATS = ("auto", "synthetic", "movielens", "recbole", "csv", "tsv", "parquet", "jsonl", "user_item", "hub")
DEDUP_POLICIES = ("keep_all", "first", "last")
SPLITS = ("time", "random")
# Formats that read a file or folder; they need data.path or a data.name the resolver can find.
FILE_FORMATS = ("auto", "movielens", "recbole", "csv", "tsv", "parquet", "jsonl", "user_item")


@dataclass
class DataConfig:
    format: str = "synthetic"
    path: str | None = None  # file or folder; None with `name`: look in data_dir, download if known
    name: str | None = None  # "movielens-100k", a folder name under data_dir, or (format hub) a Hub id
    data_dir: str | None = None  # None: $METAREC_DATA_DIR, else ~/.cache/metarec

    # Column mapping for csv/tsv/parquet/jsonl/hub (and RecBole field names without ":type").
    # None: guess from common names (user_id, userId, item_id, movieId, timestamp, rating, ...).
    user_col: str | None = None
    item_col: str | None = None
    time_col: str | None = None
    rating_col: str | None = None
    title_col: str | None = None  # RecBole .item column holding titles; None: the first *title* column
    sep: str | None = None  # csv/tsv separator, any length ("::" works); None: "," for csv, tab for tsv
    header: bool = True  # csv/tsv: the first line names the columns
    columns: list[str] = field(default_factory=list)  # csv/tsv with header=false: column names in order
    ordered_rows: bool = False  # no timestamp column: each user's rows are already in time order
    string_ids: bool = False  # accept non-numeric ids (e.g. Amazon ASINs); default: ids must be integers
    hub_split: str = "train"
    hub_config: str | None = None

    # Preprocessing.
    rating_threshold: float | None = None  # implicit feedback: keep rating >= threshold; None keeps all
    kcore: int = 0  # iterative k-core: every kept user and item has >= kcore interactions; 0: off
    dedup: str = "keep_all"  # repeated (user, item): keep_all | first | last
    split: str = "time"  # cold-start user split: time (newest users held out) | random
    valid_frac: float = 0.1
    test_frac: float = 0.1
    min_history: int = 2  # users with fewer interactions are dropped (one support + one query item)
    seed: int = 0
    cache: bool = True
    cache_dir: str | None = None  # None: $METAREC_CACHE_DIR, else ~/.cache/metarec/prepared

    # format: synthetic (see metarec_dist.data.synthetic.make_synthetic_sequences).
    synthetic_users: int = 400
    synthetic_items: int = 200
    synthetic_groups: int = 8
    synthetic_min_len: int = 12
    synthetic_max_len: int = 40
    synthetic_in_group_prob: float = 0.8

    def __post_init__(self) -> None:
        _choice("format", self.format, FORMATS)
        _choice("dedup", self.dedup, DEDUP_POLICIES)
        _choice("split", self.split, SPLITS)
        if self.format in FILE_FORMATS and self.path is None and self.name is None:
            raise ValueError(
                f"data.path: format {self.format!r} reads files; set data.path to a file or folder, or "
                "data.name to a dataset such as movielens-100k (or use data.format=synthetic)"
            )
        if self.format == "hub" and not self.name:
            raise ValueError("data.name: format 'hub' needs the Hugging Face dataset id in data.name")
        if self.sep is not None and (self.sep == "" or "\n" in self.sep or "\r" in self.sep):
            raise ValueError("data.sep must be a non-empty separator without newlines, e.g. ',' or '::'")
        if not self.header and self.format in ("csv", "tsv") and not self.columns:
            raise ValueError(
                "data.columns: a file without header needs its column names in order, "
                "e.g. --set data.columns=[user_id,item_id,rating,timestamp]"
            )
        if self.rating_threshold is not None and not math.isfinite(self.rating_threshold):
            raise ValueError("data.rating_threshold must be a finite number or null")
        if self.kcore < 0:
            raise ValueError(f"data.kcore must be >= 0 (0 turns k-core filtering off), got {self.kcore}")
        if self.min_history < 1:
            raise ValueError(f"data.min_history must be >= 1, got {self.min_history}")
        for name in ("valid_frac", "test_frac"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"data.{name} must be in [0, 1), got {value}")
        if self.valid_frac + self.test_frac >= 1.0:
            raise ValueError(
                "data.valid_frac + data.test_frac must be < 1 so that some users are left for training"
            )
        for name in ("synthetic_users", "synthetic_items", "synthetic_groups", "synthetic_min_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.synthetic_groups > self.synthetic_items:
            raise ValueError("data.synthetic_groups must be <= data.synthetic_items")
        if self.synthetic_min_len > self.synthetic_max_len:
            raise ValueError("data.synthetic_min_len must be <= data.synthetic_max_len")
        if not 0.0 <= self.synthetic_in_group_prob <= 1.0:
            raise ValueError("data.synthetic_in_group_prob must be in [0, 1]")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"data.{name}: unknown {value!r}; choose one of {', '.join(allowed)}")
