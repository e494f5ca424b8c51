"""Find the user/item/time/rating columns and turn them into clean numpy/Arrow arrays.

Every check here is vectorised; only once a problem is known is a single value looked at, so that
the error can name the file, the line (or row) and the column without slowing down the good path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metarec_dist.data.config import DataConfig
from metarec_dist.data.errors import DataError

# Common names, tried case-insensitively in this order when the config does not name a column.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "user": ("user_id", "userid", "user", "uid", "reviewerid", "customer_id", "visitor_id", "visitorid"),
    "item": ("item_id", "itemid", "item", "iid", "movieid", "movie_id", "asin", "product_id", "business_id"),
    "time": ("timestamp", "time", "ts", "unixreviewtime", "datetime", "date", "event_time"),
    "rating": ("rating", "score", "overall", "stars"),
}
# Ids spelt like a missing value: kept as ids, every missing one would become the same user or item.
MISSING_WORDS = ["nan", "none", "null"]
CONFIG_KEY = {"user": "user_col", "item": "item_col", "time": "time_col", "rating": "rating_col"}
ROLE_NAME = {
    "user": "user id",
    "item": "item id",
    "time": "timestamp",
    "rating": "rating",
    "feature": "feature value",  # numeric side information (data/side.py)
}


@dataclass
class Where:
    """How to point at a value: the file (or Hub dataset) and a data-row -> "line 12" mapping."""

    file: str
    locate: Callable[[int], str]
    # A text file's error for (row, column, problem): at the value's own line, a quote that runs on named.
    value_error: Callable[[int, str, str], DataError] | None = None

    def error(self, row: int, column: str, problem: str) -> DataError:
        if self.value_error is not None:
            return self.value_error(row, column, problem)
        return DataError(f"{self.file}: {self.locate(row)}, column {column!r}: {problem}")


def bare(name: str) -> str:
    """RecBole headers are ``name:type``; config keys and guesses use the bare name."""
    return name.split(":", 1)[0].strip()


def resolve_columns(
    names: list[str], file: str, cfg: DataConfig, *, optional_rating: bool = False
) -> dict[str, str]:
    """Map role -> actual column name. ``time`` is absent when rows are in time order already;
    ``rating`` is required when a rating threshold asks for it, else included only when
    ``optional_rating`` and a rating column exists."""
    by_bare = {bare(n).lower(): n for n in reversed(names)}  # reversed: the first of duplicates wins
    listed = ", ".join(names) if names else "(none)"
    roles = ["user", "item"]
    if not cfg.ordered_rows:
        roles.append("time")
    if cfg.rating_threshold is not None or optional_rating:
        roles.append("rating")
    found: dict[str, str] = {}
    for role in roles:
        key = CONFIG_KEY[role]
        wanted = getattr(cfg, key)
        if wanted is not None:
            column = by_bare.get(bare(wanted).lower())
            if column is None:
                numbers = numbers_among(names)
                hint = " " + HEADERLESS_HINT.format(numbers=", ".join(numbers)) if numbers else ""
                raise DataError(
                    f"{file}: column {wanted!r} (data.{key}) not found; the columns are: {listed}.{hint}"
                )
        else:
            column = next((by_bare[c] for c in CANDIDATES[role] if c in by_bare), None)
            if column is None and role == "rating" and cfg.rating_threshold is None:
                continue  # optional and absent
            if column is None:
                raise DataError(_missing_message(role, file, listed, key, names))
        found[role] = column
    return found


def _missing_message(role: str, file: str, listed: str, key: str, names: list[str] | None = None) -> str:
    tried = ", ".join(CANDIDATES[role])
    msg = f"{file}: no {ROLE_NAME[role]} column found (looked for {tried}); the columns are: {listed}. "
    if role in ("user", "item") and numbers_among(names or []):
        return msg + HEADERLESS_HINT.format(numbers=", ".join(numbers_among(names or [])))
    if role == "time":
        return msg + (
            f"Set data.{key} to the timestamp column, or data.ordered_rows=true if each user's rows are "
            "already in time order"
        )
    if role == "rating":
        return msg + f"data.rating_threshold needs ratings: set data.{key}, or drop the threshold"
    return msg + f"Set data.{key} to the right column"


# Column names that are numbers: the first line is a row of data, not a header (string ids with
# numeric ratings or times: "u12,B00X,4,1600000000"; a header of numbers only is caught by textio).
_NUMBER_NAME = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
HEADERLESS_HINT = (
    "Line 1 looks like data, not a header (it holds {numbers}): for a file without a header line set "
    "data.header=false and name its columns in order, e.g. "
    "--set data.columns=[user_id,item_id,rating,timestamp]"
)


def numbers_among(names: list[str]) -> list[str]:
    """The column names that are numbers (a header-less file's first row read as its header)."""
    return [n for n in names if _NUMBER_NAME.fullmatch(n.strip())]


def _first(mask: pa.ChunkedArray | pa.Array) -> int:
    """Index of the first true value of a boolean array (nulls count as false); -1 if none."""
    return int(pc.index(pc.fill_null(mask, False), True).as_py())


def _chunked(col: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    return col if isinstance(col, pa.ChunkedArray) else pa.chunked_array([col])


def _check_no_nulls(col: pa.ChunkedArray, where: Where, name: str, role: str) -> None:
    if col.null_count:
        raise where.error(_first(pc.is_null(col)), name, f"empty {ROLE_NAME[role]}")


def check_utf8(col: pa.ChunkedArray, where: Where, name: str) -> pa.ChunkedArray:
    """Binary columns appear where a value is not UTF-8 (the readers then cannot decode it)."""
    try:
        return col.cast(pa.string())
    except pa.ArrowInvalid:
        for row, value in enumerate(col.to_pylist()):  # error path only
            if value is not None:
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError as exc:
                    problem = f"not valid UTF-8 (byte 0x{value[exc.start]:02x}); re-save the file as UTF-8"
                    raise where.error(row, name, problem) from None
        raise


def undictionary(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary column (a pandas ``category`` saved to Parquet) as its plain values."""
    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def _checked_column(col: pa.Array | pa.ChunkedArray, where: Where, name: str, role: str) -> pa.ChunkedArray:
    """``col`` as one chunked array, binary (not UTF-8 somewhere) decoded or named, with no empty value; a
    dictionary column (a pandas ``category`` saved to Parquet) as its values."""
    col = undictionary(_chunked(col))
    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
        col = check_utf8(col, where, name)
    _check_no_nulls(col, where, name, role)
    return col


def to_ids(col: pa.Array | pa.ChunkedArray, where: Where, name: str, role: str, string_ids: bool):
    """Integer ids -> int64 numpy array; with ``string_ids`` -> Arrow string array of non-empty tokens."""
    col = _checked_column(col, where, name, role)
    typ = col.type
    if string_ids:
        if pa.types.is_floating(typ):
            col = pc.cast(_integral(col, where, name, role), pa.int64())
        text = pc.utf8_trim_whitespace(col.cast(pa.string()))
        empty = _first(pc.equal(pc.utf8_length(text), 0))
        if empty >= 0:
            raise where.error(empty, name, f"empty {ROLE_NAME[role]}")
        # str() of a missing value (pandas' astype(str) on NaN/None): an id of its own, silently, if kept
        missing = _first(pc.is_in(pc.utf8_lower(text), value_set=pa.array(MISSING_WORDS)))
        if missing >= 0:
            raise where.error(missing, name, _missing_id(text[missing].as_py(), role))
        return text.combine_chunks()
    if pa.types.is_integer(typ):
        return col.cast(pa.int64()).to_numpy()
    if pa.types.is_floating(typ):
        return _integral(col, where, name, role).cast(pa.int64()).to_numpy()
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        # "10.0" too: an integer column with a gap, written by pandas as floats; read as numbers (the log's
        # CSV columns) such ids are accepted already, read as text (side tables) they must be too.
        ok = pc.match_substring_regex(col, r"^\s*-?[0-9]+(\.0*)?\s*$")
        bad = _first(pc.invert(pc.fill_null(ok, False)))
        if bad >= 0:
            value = col[bad].as_py()
            if not value.strip():
                raise where.error(bad, name, f"empty {ROLE_NAME[role]}")
            raise where.error(
                bad,
                name,
                f"{value!r} is not an integer {ROLE_NAME[role]} "
                "(set data.string_ids=true if ids are not numbers)",
            )
        try:
            digits = pc.replace_substring_regex(pc.utf8_trim_whitespace(col), r"\.0*$", "")
            return pc.cast(digits, pa.int64()).to_numpy()
        except pa.ArrowInvalid:  # overflow: beyond int64; error path only, find the first one
            values = digits.to_pylist()
            row = next(i for i, v in enumerate(values) if not -(2**63) <= int(v) < 2**63)
            raise where.error(row, name, _too_large(col[row].as_py().strip(), role)) from None
    raise DataError(
        f"{where.file}: column {name!r} has type {typ}; {ROLE_NAME[role]}s must be integers or strings"
    )


def _integral(col: pa.ChunkedArray, where: Where, name: str, role: str) -> pa.ChunkedArray:
    values = col.to_numpy()
    bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
    if bad.size:
        row = int(bad[0])
        if np.isnan(values[row]):  # "nan" in a text file, read as a float
            raise where.error(row, name, _missing_id("nan", role))
        raise where.error(row, name, f"{float(values[row])!r} is not an integer {ROLE_NAME[role]}")
    # pyarrow reads integers beyond int64 as doubles, which hold integers exactly only up to 2**53:
    # beyond that, distinct ids would silently merge.
    big = np.flatnonzero(np.abs(values) > 2.0**53)
    if big.size:
        row = int(big[0])
        raise where.error(row, name, _too_large(f"{values[row]:.0f}", role))
    return col


def _missing_id(value: str, role: str) -> str:
    return (
        f"{value!r} is a missing {ROLE_NAME[role]} (how pandas writes NaN/None as text); drop those rows "
        "or give them their ids"
    )


def _too_large(value: str, role: str) -> str:
    return (
        f"{value} is too large for an integer {ROLE_NAME[role]} (beyond 64-bit, or not exact as a number); "
        "set data.string_ids=true to read ids as text"
    )


def to_numbers(col: pa.Array | pa.ChunkedArray, where: Where, name: str, role: str) -> np.ndarray:
    """Timestamps or ratings -> float64 numpy array; dates and ISO-8601 times become Unix seconds."""
    col = _checked_column(col, where, name, role)
    typ = col.type
    if pa.types.is_timestamp(typ):
        per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[typ.unit]
        return col.cast(pa.timestamp(typ.unit)).cast(pa.int64()).to_numpy().astype(np.float64) / per_second
    if pa.types.is_date(typ):
        return col.cast(pa.date32()).cast(pa.int32()).to_numpy().astype(np.float64) * 86400.0
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        col = _strings_to_numbers(col, where, name, role)
        typ = col.type
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        values = col.cast(pa.float64()).to_numpy()
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            row = int(bad[0])
            raise where.error(row, name, f"{float(values[row])!r} is not a valid {ROLE_NAME[role]}")
        return values
    raise DataError(f"{where.file}: column {name!r} has type {typ}; {ROLE_NAME[role]}s must be numbers")


def _strings_to_numbers(col: pa.ChunkedArray, where: Where, name: str, role: str) -> pa.ChunkedArray:
    try:
        return pc.cast(pc.utf8_trim_whitespace(col), pa.float64())
    except pa.ArrowInvalid:
        pass
    if role == "time":
        seconds = _iso_seconds(col)  # ISO-8601 dates/times are timestamps too
        if seconds is not None:
            return seconds
    for row, value in enumerate(col.to_pylist()):  # error path only: find the first offender
        try:
            float(value)
        except ValueError:
            what = f"empty {ROLE_NAME[role]}" if not value.strip() else f"{value!r} is not a number"
            hint = " (Unix time or ISO-8601 expected)" if role == "time" else ""
            raise where.error(row, name, what + hint) from None
    raise DataError(f"{where.file}: column {name!r}: cannot read the values as numbers")


# An ISO-8601 zone designator after a time's minutes or seconds: "Z", "+02:00", "-0500" (a date's own
# "-01" is not one).
_ZONE = r"\d\d:\d\d(:\d\d([.,]\d*)?)?\s*(Z|z|[+-]\d\d(:?\d\d)?)$"


def _iso_seconds(col: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """ISO-8601 texts -> Unix seconds (float64), or None when some value is not one. Arrow parses a time
    with a zone ("...Z", "+02:00") only as a zoned timestamp and one without only as a naive one, so a
    column is cast in those two parts (naive times count as UTC, as Arrow's CSV reader takes them), at
    nanosecond precision so that fractional seconds parse too. Only the strings' path: Arrow's own readers
    infer the common forms already."""
    text = pc.utf8_trim_whitespace(col)
    zoned = pc.fill_null(pc.match_substring_regex(text, _ZONE), False)
    out = np.empty(len(text), dtype=np.float64)
    mask = zoned.to_numpy(zero_copy_only=False)
    for part, typ in ((mask, pa.timestamp("ns", tz="UTC")), (~mask, pa.timestamp("ns"))):
        if not part.any():
            continue
        try:
            parsed = pc.cast(pc.filter(text, pa.array(part)), typ)
        except pa.ArrowInvalid:
            return None
        ns = parsed.cast(pa.int64()).to_numpy()
        out[part] = (ns // 10**9).astype(np.float64) + (ns % 10**9) / 1e9  # whole seconds stay exact
    return pa.chunked_array([pa.array(out)])
