"""Every supported input -> one normalised interaction log (user, item, time, optional rating)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

from metarec_dist.data.columns import CANDIDATES, Where, resolve_columns, to_ids, to_numbers
from metarec_dist.data.config import DataConfig
from metarec_dist.data.errors import DataError
from metarec_dist.data.layout import Layout
from metarec_dist.data.synthetic import make_synthetic_sequences
from metarec_dist.data.textio import (
    TextFile,
    TextSpec,
    Utf8Text,
    arrow_source,
    check_file,
    check_not_binary,
    reencode_hint,
)
from metarec_dist.data.titles import read_titles

log = logging.getLogger(__name__)

# Fixed MovieLens layouts: (separator, header, column names when headerless).
_ML_NAMES = ["user_id", "item_id", "rating", "timestamp"]
_MOVIELENS = {
    "movielens-100k": TextSpec(Path(), sep="\t", header=False, names=_ML_NAMES, quoting=False),
    "movielens-1m": TextSpec(Path(), sep="::", header=False, names=_ML_NAMES, quoting=False),
    "movielens-csv": TextSpec(Path(), sep=",", header=True),
}


@dataclass
class RawLog:
    """The log in file order. Ids are int64 numpy arrays, or Arrow strings with ``string_ids``."""

    user: np.ndarray | pa.Array
    item: np.ndarray | pa.Array
    time: np.ndarray  # float64; with ordered rows, the row number
    rating: np.ndarray | None
    source: str
    files: list[Path] = field(default_factory=list)
    titles: dict[str, str] | None = None  # raw item id -> title

    def __len__(self) -> int:
        return len(self.time)


def read_layout(layout: Layout, cfg: DataConfig, ratings: bool = False) -> RawLog:
    """The log of ``layout``; ``ratings``: also read a rating column when there is one."""
    if layout.kind in _MOVIELENS:
        base = _MOVIELENS[layout.kind]
        spec = TextSpec(layout.file, base.sep, base.header, list(base.names), base.quoting)
        # The layout fixes the columns; the user's column mapping is for generic files.
        cfg = _with_defaults(cfg)
        raw = _read_text(spec, cfg, f"{layout.file} (MovieLens)", ratings)
    elif layout.kind == "recbole":
        spec = TextSpec(layout.file, "\t", header=True, quoting=False)
        raw = _read_text(spec, cfg, f"{layout.file} (RecBole)", ratings)
    elif layout.kind in ("csv", "tsv"):
        if not cfg.header and not cfg.columns:  # format auto: the config check saw no csv to ask this of
            raise DataError(
                f"{layout.file}: data.header=false needs the column names in order, e.g. "
                "--set data.columns=[user_id,item_id,rating,timestamp]"
            )
        sep = cfg.sep or ("," if layout.kind == "csv" else "\t")
        spec = TextSpec(layout.file, sep, cfg.header, list(cfg.columns), quoting=layout.kind == "csv")
        raw = _read_text(spec, cfg, f"{layout.file} ({layout.kind})", ratings)
    elif layout.kind == "user_item":
        spec = TextSpec(
            layout.file, " ", header=False, names=["user", "item"], quoting=False, whitespace=True
        )
        if cfg.rating_threshold is not None:
            raise DataError(
                f"{layout.file}: data.rating_threshold is set but user_item files have no ratings"
            )
        ordered = dataclasses.replace(cfg, ordered_rows=True, user_col="user", item_col="item", time_col=None)
        raw = _read_text(spec, ordered, f"{layout.file} (user item, in time order)", ratings)
    elif layout.kind == "parquet":
        raw = _read_parquet(layout.file, cfg, ratings)
    elif layout.kind == "jsonl":
        raw = _read_jsonl(layout.file, cfg, ratings)
    else:  # pragma: no cover - layouts come from layout.py
        raise DataError(f"{layout.file}: unsupported layout {layout.kind!r}")
    raw.files = layout.files()
    if layout.meta is not None:
        raw.titles = read_titles(layout, cfg)
    return raw


def _with_defaults(cfg: DataConfig) -> DataConfig:
    fixed = {"user_col": None, "item_col": None, "time_col": None, "rating_col": None, "ordered_rows": False}
    return dataclasses.replace(cfg, **fixed)


def _build(table: pa.Table, roles: dict[str, str], where: Where, cfg: DataConfig, source: str) -> RawLog:
    user = to_ids(table.column(roles["user"]), where, roles["user"], "user", cfg.string_ids)
    item = to_ids(table.column(roles["item"]), where, roles["item"], "item", cfg.string_ids)
    if "time" in roles:
        time = to_numbers(table.column(roles["time"]), where, roles["time"], "time")
    else:  # ordered rows: the row number is the time, which keeps each user's file order
        time = np.arange(table.num_rows, dtype=np.float64)
    rating = None
    if "rating" in roles:
        rating = to_numbers(table.column(roles["rating"]), where, roles["rating"], "rating")
    return RawLog(user, item, time, rating, source)


def _read_text(spec: TextSpec, cfg: DataConfig, source: str, ratings: bool) -> RawLog:
    text = TextFile(dataclasses.replace(spec, encoding=cfg.encoding))
    roles = resolve_columns(text.names, text.label, cfg, optional_rating=ratings)
    ids = (roles["user"], roles["item"]) if cfg.string_ids else ()
    table = text.read(list(dict.fromkeys(roles.values())), string_columns=ids)
    if not spec.header:
        _check_no_header_row(table, roles, text)
    return _build(table, roles, text.where(), cfg, source)


def _check_no_header_row(table: pa.Table, roles: dict[str, str], text: TextFile) -> None:
    """A header line in a file read without one: its names would be read as a user and an item ("not an
    integer user id", or with data.string_ids a user called "user_id"), so name the line for what it is."""
    first = {role: str(table.column(roles[role])[0].as_py()).strip().lower() for role in ("user", "item")}
    if all(first[role] in (*CANDIDATES[role], roles[role].lower()) for role in first):
        raise DataError(
            f"{text.label}: line {text.line_of_row(0)} looks like a header line ({first['user']}, "
            f"{first['item']}) but this file is read without one: delete it (user_item and MovieLens files "
            "have none), or for csv/tsv drop data.header=false"
        )


def _read_parquet(path: Path, cfg: DataConfig, ratings: bool) -> RawLog:
    check_file(path)
    try:
        with arrow_source(path) as source, pq.ParquetFile(source) as pf:
            names = pf.schema_arrow.names
            if pf.metadata.num_rows == 0:
                raise DataError(f"{path}: the Parquet file has no rows")
            roles = resolve_columns(names, str(path), cfg, optional_rating=ratings)
            table = pf.read(columns=list(dict.fromkeys(roles.values())))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    return _build(table, roles, Where(str(path), lambda row: f"row {row + 1}"), cfg, f"{path} (parquet)")


def _read_jsonl(path: Path, cfg: DataConfig, ratings: bool) -> RawLog:
    table, where = read_jsonl_table(path, cfg.encoding)
    if table.num_rows == 0:
        raise DataError(f"{path}: no JSON records")
    roles = resolve_columns(table.column_names, str(path), cfg, optional_rating=ratings)
    return _build(table, roles, where, cfg, f"{path} (jsonl)")


def read_jsonl_table(path: Path, encoding: str = "utf-8") -> tuple[pa.Table, Where]:
    """A JSON Lines file (text in ``encoding``, ``data.encoding``) as one Arrow table, and where its rows
    are (their line numbers); a file Arrow cannot read is a DataError naming the first bad line."""
    check_file(path)
    check_not_binary(path)
    text = Utf8Text(path, encoding, str(path))  # alive until the read is done: it owns its copy
    try:
        table = pj.read_json(text.source())
        table.validate(full=True)  # Arrow's JSON reader keeps bytes that are not UTF-8 in its strings
    except (pa.ArrowInvalid, OSError) as exc:  # OSError: a damaged gzip file
        text.check_archive()
        raise diagnose_jsonl(path, encoding) or DataError(
            f"{path}: cannot be read as JSON Lines: {exc}"
        ) from None
    return table, Where(str(path), lambda row: f"line {jsonl_line(path, row, encoding)}")


def _jsonl_lines(path: Path, encoding: str) -> Iterator[bytes]:
    """The file's lines as UTF-8 bytes (transcoded a chunk at a time: see ``Utf8Text``)."""
    text = Utf8Text(path, encoding, str(path))
    yield from text.lines()


def jsonl_line(path: Path, row: int, encoding: str = "utf-8") -> int:
    seen = -1
    for number, line in enumerate(_jsonl_lines(path, encoding), 1):
        if line.strip():
            seen += 1
            if seen == row:
                return number
    return -1


def diagnose_jsonl(path: Path, encoding: str = "utf-8") -> DataError | None:
    """Error path: the first line that is not UTF-8, not JSON, not an object, or changes a field's type."""
    kinds: dict[str, tuple[str, int]] = {}
    first = True
    records = 0
    for number, raw in enumerate(_jsonl_lines(path, encoding), 1):
        if not raw.strip():
            continue
        if first and raw.lstrip().startswith(b"["):  # the first record opens a JSON array
            return DataError(
                f"{path}: line {number}: a JSON array; the reader takes JSON Lines, one object per line "
                "(pandas: df.to_json(path, orient='records', lines=True); jq: jq -c '.[]')"
            )
        first = False
        records += 1
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            return DataError(
                f"{path}: line {number}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); {reencode_hint(raw)}"
            )
        except json.JSONDecodeError as exc:
            return DataError(f"{path}: line {number}, column {exc.colno}: not valid JSON ({exc.msg})")
        if not isinstance(record, dict):
            return DataError(f"{path}: line {number}: expected a JSON object per line")
        for key, value in record.items():
            kind = (
                "null"
                if value is None
                else "number"
                if isinstance(value, (int, float))
                else type(value).__name__
            )
            if kind == "null":
                continue
            first = kinds.setdefault(key, (kind, number))
            if first[0] != kind:
                return DataError(
                    f"{path}: line {number}, column {key!r}: a {kind} where line {first[1]} has a "
                    f"{first[0]}; use one type per field (ids as numbers, or all as strings)"
                )
    if not records:  # Arrow's "Empty JSON file": compressed or decoded to nothing (check_file saw bytes)
        return DataError(f"{path}: no JSON records (no text once decompressed or decoded)")
    return None


def read_hub(cfg: DataConfig, ratings: bool = False) -> RawLog:
    """A Hugging Face Hub dataset (needs network access or a copy in the Hugging Face cache)."""
    import datasets  # lazy: heavy import, only this path needs the Hub

    assert cfg.name is not None
    label = f"Hub dataset {cfg.name!r} (split {cfg.hub_split})"
    try:
        ds = datasets.load_dataset(cfg.name, cfg.hub_config, split=cfg.hub_split)
    except Exception as exc:  # the Hub raises many types (connection, offline mode, not found, auth)
        raise DataError(
            f"could not load {label}: {exc.__class__.__name__}: {exc}. Loading from the Hugging Face Hub "
            "needs network access (or the dataset already in the Hugging Face cache); offline, download "
            "its files elsewhere and set data.path (formats csv, parquet, jsonl), or run an offline smoke "
            "test with --set data.format=synthetic"
        ) from None
    table = ds.data.table
    if table.num_rows == 0:
        raise DataError(f"{label}: no rows")
    roles = resolve_columns(table.column_names, label, cfg, optional_rating=ratings)
    return _build(table, roles, Where(label, lambda row: f"row {row + 1}"), cfg, label)


def read_synthetic(cfg: DataConfig) -> RawLog:
    _check_synthetic_fits(cfg)
    sequences = make_synthetic_sequences(
        num_users=cfg.synthetic_users,
        num_items=cfg.synthetic_items,
        num_groups=cfg.synthetic_groups,
        min_len=cfg.synthetic_min_len,
        max_len=cfg.synthetic_max_len,
        in_group_prob=cfg.synthetic_in_group_prob,
        seed=cfg.seed,
    )
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    user = np.repeat(np.arange(len(sequences), dtype=np.int64), lengths)
    item = np.concatenate(sequences).astype(np.int64)
    # Users follow each other in time, so the time split holds out the highest-numbered users.
    time = np.arange(len(item), dtype=np.float64)
    source = (
        f"synthetic ({cfg.synthetic_users} users, {cfg.synthetic_items} items, "
        f"{cfg.synthetic_groups} groups, seed {cfg.seed})"
    )
    return RawLog(user, item, time, None, source)


def _check_synthetic_fits(cfg: DataConfig) -> None:
    """Refuse a synthetic log that would not fit in memory, before generating it (1e9 users filled the
    machine): per interaction its sequence entry and the user / item / time columns (32 bytes) with their
    split copies (about as much again), per user an array header (~112 bytes); per item 4 float arrays."""
    from metarec_dist.errors import check_fits

    mean_len = (cfg.synthetic_min_len + cfg.synthetic_max_len) / 2
    check_fits(
        cfg.synthetic_items,
        32,
        f"data.synthetic_items={cfg.synthetic_items:,}",
        "the item tables alone need",
        "item",
    )
    check_fits(
        cfg.synthetic_users,
        int(mean_len * 64) + 112,
        f"data.synthetic_users={cfg.synthetic_users:,} (mean length {mean_len:g})",
        "the generated log alone needs",
        "user",
    )
