"""Side tables (user profiles, item content) -> ``FeatureTables`` aligned with the prepared ids.

A side table is a RecBole ``.user``/``.item`` atomic file, or a CSV/TSV (with a header), Parquet or JSONL
file with one row per user or item: an id column (``data.user_col``/``data.item_col`` or a guessed name,
as for the interaction log) and the declared feature columns. The files are read by the interaction
readers' machinery (``TextFile``, Parquet, JSON Lines) and checked as strictly: a duplicate id, a wrong
column type or an unparsable number is a ``DataError`` naming the file, the line and the column.

Encoding (numpy/pandas array operations, no loop over rows): the vocabulary of a feature is built from
the rows of the users/items in the prepared data, sorted (so file order does not matter); everything
without a known value -- no row, an empty field, a category below ``min_count`` -- gets the explicit
unknown id and is counted, never dropped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from metarec_dist.data.columns import (
    CANDIDATES,
    Where,
    bare,
    check_utf8,
    numbers_among,
    to_ids,
    to_numbers,
    undictionary,
)
from metarec_dist.data.config import DataConfig, FeatureSpec
from metarec_dist.data.errors import DataError
from metarec_dist.data.features import (
    PAD,
    SPECIALS,
    UNKNOWN,
    EncodedFeature,
    FeatureTables,
    bucket_ids,
    bucket_labels,
)
from metarec_dist.data.layout import EXTENSIONS, Layout, file_kind, format_suffix, recbole_sibling
from metarec_dist.data.readers import read_jsonl_table
from metarec_dist.data.textio import TextFile, TextSpec, arrow_source, check_file

log = logging.getLogger(__name__)

ENTITIES = ("user", "item")


@dataclass
class SideTable:
    """The rows of one side table: normalised raw ids (as the log spells them) and the raw columns."""

    ids: np.ndarray  # object array of str, unique
    columns: dict[str, tuple[str, pa.ChunkedArray]]  # feature name -> (file's column, values by row)
    where: Where
    id_column: str = ""  # the file's id column, for messages


_TABLE_KEYS = ("path", "sep", "columns")  # data.<entity>_features_<key>: where a side table is, how it reads


def feature_files(cfg: DataConfig, layout: Layout | None) -> dict[str, Path]:
    """entity -> the side table to read, for each entity that declares features."""
    files = {}
    for entity in ENTITIES:
        if not getattr(cfg, f"{entity}_features"):
            given = [k for k in _TABLE_KEYS if getattr(cfg, f"{entity}_features_{k}") not in (None, [])]
            if given:  # a table described, nothing taken from it
                log.warning(
                    "data.%s_features_%s is set but data.%s_features declares no feature: the table is not "
                    "read; declare its columns, e.g. data.%s_features=[{name: COLUMN, kind: token}]",
                    entity,
                    given[0],
                    entity,
                    entity,
                )
            continue
        explicit = getattr(cfg, f"{entity}_features_path")
        if explicit is not None:
            path = Path(explicit).expanduser()
            if not path.exists():
                raise DataError(f"data.{entity}_features_path: {path} not found")
        elif layout is not None and layout.kind == "recbole":
            path = recbole_sibling(layout.file, f".{entity}")
            if not path.is_file():
                raise DataError(
                    f"{path}: not found; data.{entity}_features needs a side table: put the RecBole "
                    f".{entity} file next to {layout.file.name}, or set data.{entity}_features_path"
                )
        else:
            raise DataError(
                f"data.{entity}_features: declared, but this data source has no {entity} side table; set "
                f"data.{entity}_features_path to a CSV, Parquet, JSONL or RecBole .{entity} file"
            )
        files[entity] = path
    return files


def build_feature_tables(
    cfg: DataConfig, files: dict[str, Path], user_raw: pa.Array, item_raw: pa.Array
) -> FeatureTables | None:
    """Encode the declared features; ``user_raw``/``item_raw`` are the prepared data's raw ids in id order
    (user id u <-> user_raw[u], item id i <-> item_raw[i - 1])."""
    if not files:
        return None
    tables = FeatureTables()
    for entity, entity_raw in (("user", user_raw), ("item", item_raw)):
        if entity not in files:
            continue
        specs: list[FeatureSpec] = getattr(cfg, f"{entity}_features")
        side = read_side_table(files[entity], entity, specs, cfg)
        raw = np.asarray(entity_raw.to_numpy(zero_copy_only=False), dtype=object)
        rows = pd.Index(side.ids).get_indexer(raw)  # -1: no row for this user/item
        _check_overlap(rows, raw, side, entity)
        encoded = {s.name: _encode(s, side, rows, entity) for s in specs}
        if entity == "item":  # row 0 is the padding item
            encoded = {name: _with_padding_row(f) for name, f in encoded.items()}
        getattr(tables, entity).update(encoded)
    return tables


# ------------------------------------------------------------------------------------------- reading


def read_side_table(path: Path, entity: str, specs: list[FeatureSpec], cfg: DataConfig) -> SideTable:
    kind = _table_kind(path, entity)
    _check_text_options(path, kind, entity, cfg)
    if kind in ("recbole", "csv", "tsv"):
        text = _side_text(path, kind, entity, cfg)
        id_col, wanted = _resolve(text.names, text.label, entity, specs, cfg)
        # Everything as text: "007" stays a token, and numbers are parsed here with a located error.
        table = text.read(
            list(dict.fromkeys([id_col, *wanted.values()])), string_columns=(id_col, *wanted.values())
        )
        where = text.where()
    elif kind == "parquet":
        check_file(path)
        try:
            with arrow_source(path) as source, pq.ParquetFile(source) as pf:
                id_col, wanted = _resolve(pf.schema_arrow.names, str(path), entity, specs, cfg)
                table = pf.read(columns=list(dict.fromkeys([id_col, *wanted.values()])))
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        where = Where(str(path), lambda row: f"row {row + 1}")
    else:
        table, where = read_jsonl_table(path, cfg.encoding)
        id_col, wanted = _resolve(table.column_names, str(path), entity, specs, cfg)
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows")
    ids = to_ids(table.column(id_col), where, id_col, entity, cfg.string_ids)
    ids = np.asarray(pa.array(ids).cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)
    _check_unique(ids, where, id_col, entity)
    return SideTable(ids, {name: (c, table.column(c)) for name, c in wanted.items()}, where, id_col)


_KIND_NAMES = {"parquet": "Parquet", "jsonl": "JSON Lines"}


def _check_text_options(path: Path, kind: str, entity: str, cfg: DataConfig) -> None:
    """A separator or column list given for a Parquet or JSON Lines table would be ignored: refused."""
    if kind in ("recbole", "csv", "tsv"):
        return
    for option in ("sep", "columns"):
        if getattr(cfg, f"{entity}_features_{option}") not in (None, []):
            raise DataError(
                f"data.{entity}_features_{option}: {path} is a {_KIND_NAMES.get(kind, kind)} file, whose "
                "columns are named "
                f"in the file; the option is for delimited text tables: drop it"
            )


def _side_text(path: Path, kind: str, entity: str, cfg: DataConfig) -> TextFile:
    """A delimited side table: at ``data.<entity>_features_sep`` when set, and without a header line when
    ``data.<entity>_features_columns`` names its columns; else as before those keys (RecBole: tab and a
    header; csv/tsv: ``_delimited_side_table``)."""
    sep, columns = getattr(cfg, f"{entity}_features_sep"), getattr(cfg, f"{entity}_features_columns")
    encoding = cfg.encoding
    if sep is None and not columns:
        if kind == "recbole":
            return TextFile(TextSpec(path, "\t", header=True, quoting=False, side=entity, encoding=encoding))
        return _delimited_side_table(path, kind, cfg.sep, entity, encoding)
    default = "\t" if kind == "recbole" else cfg.sep or ("," if kind == "csv" else "\t")
    header = not columns
    # CSV quoting for .csv files only, as without these keys (TSV and RecBole-named files have none).
    quoting = kind == "csv"
    spec = TextSpec(path, sep or default, header, list(columns), quoting, side=entity, encoding=encoding)
    text = TextFile(spec)
    if header and len(text.names) < 2:  # one column: no feature, or a wrong separator
        key = f"data.{entity}_features_sep"
        said = f"{key}={sep!r}" if sep is not None else f"separator {spec.sep!r} ({key} not set)"
        raise DataError(
            f"{path}: line 1 (the header) is one column {text.names[0]!r} when split at {said}; set {key} "
            "to the separator the file uses"
        )
    if not header:
        _check_field_count(text, entity, sep)
    return text


def _check_field_count(text: TextFile, entity: str, sep: str | None) -> None:
    """A header-less table's first line has as many fields as ``data.<entity>_features_columns`` names;
    one field is a wrong separator (said naming the key), another count a wrong column list."""
    fields, names = len(text.first_fields()), text.names
    if fields == len(names):
        return
    key = f"data.{entity}_features_sep"
    if fields == 1:
        said = f"{key}={sep!r}" if sep is not None else f"separator {text.spec.sep!r} ({key} not set)"
        raise DataError(
            f"{text.label}: line 1 is one field when split at {said}; set {key} to the file's separator"
        )
    raise DataError(
        f"{text.label}: line 1 has {fields} fields but data.{entity}_features_columns names {len(names)} "
        f"({', '.join(names)}); name every column of the file, in order"
    )


def _delimited_side_table(path: Path, kind: str, sep: str | None, entity: str, encoding: str) -> TextFile:
    """A csv/tsv side table, split at ``data.sep`` when set. That key is mostly set for the log (a
    ';'-separated export) while a side table written by pandas keeps its extension's separator: a header
    that is one column at ``data.sep`` but several at the extension's (',' or tab) is read at the latter,
    which cannot misread it (a one-column table holds no feature); said at INFO."""
    default = "," if kind == "csv" else "\t"

    def read(at: str) -> TextFile:
        return TextFile(TextSpec(path, at, True, [], kind == "csv", side=entity, encoding=encoding))

    try:
        return read(sep or default)
    except DataError as exc:
        if sep is None or sep == default:
            raise
        text = _or_none(lambda: read(default))
        if text is None or len(text.names) < 2:
            raise exc from None
    log.info("%s: its header holds no data.sep=%r; read at %r, as its extension says", path, sep, default)
    return text


def _or_none(read: Callable[[], TextFile]) -> TextFile | None:
    try:
        return read()
    except DataError:
        return None


def _table_kind(path: Path, entity: str) -> str:
    suffix = format_suffix(path)
    if suffix in (".user", ".item"):
        if suffix != f".{entity}":
            raise DataError(f"data.{entity}_features_path: {path} is a RecBole {suffix} file, not .{entity}")
        return "recbole"
    kind = file_kind(path)
    if kind is None or path.is_dir():
        raise DataError(
            f"data.{entity}_features_path: cannot tell the format of {path}; a side table is a RecBole "
            f".{entity} file or ends in {', '.join(sorted(EXTENSIONS))}"
        )
    return kind


def _resolve(
    names: list[str], file: str, entity: str, specs: list[FeatureSpec], cfg: DataConfig
) -> tuple[str, dict[str, str]]:
    """(id column, feature name -> column) by bare, case-insensitive name, as the interaction readers do."""
    by_bare = {bare(n).lower(): n for n in reversed(names)}
    listed = ", ".join(names)
    configured = getattr(cfg, f"{entity}_col")
    tried = list(dict.fromkeys(([bare(configured).lower()] if configured else []) + list(CANDIDATES[entity])))
    id_col = next((by_bare[c] for c in tried if c in by_bare), None)
    if id_col is None:
        raise DataError(_no_id_column(file, entity, tried, names, configured))
    wanted = {}
    for i, spec in enumerate(specs):
        column = by_bare.get(bare(spec.source_column).lower())
        if column is None:
            key = f"data.{entity}_features[{i}].{'column' if spec.column else 'name'}"
            raise DataError(
                f"{file}: column {spec.source_column!r} ({key}) not found; the columns are: {listed}"
            )
        wanted[spec.name] = column
    return id_col, wanted


def _no_id_column(file: str, entity: str, tried: list[str], names: list[str], configured: str | None) -> str:
    """data.user_col / item_col names the log's id column too, so "set it" is no fix for a side table whose
    id column is named otherwise: say to rename the table's column (or add its missing header line)."""
    msg = (
        f"{file}: no {entity} id column found (looked for {', '.join(tried)}); the columns are: "
        f"{', '.join(names)}. "
    )
    numbers = numbers_among(names)
    if numbers:
        return msg + (
            f"Line 1 looks like data, not a header (it holds {', '.join(numbers)}): a side table needs a "
            f"header line naming its columns, the {entity} id column as in the log, or, without one, "
            f"data.{entity}_features_columns naming them in order, e.g. [{entity}_id, ...]"
        )
    if configured:
        return msg + (
            f"Name the table's {entity} id column {configured!r} as in the log (data.{entity}_col names "
            "the id column of the log and of its side table)"
        )
    return msg + f"Name the table's {entity} id column as the log's (one of the names looked for)"


def _check_unique(ids: np.ndarray, where: Where, column: str, entity: str) -> None:
    repeated = pd.Series(ids).duplicated().to_numpy()
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        first = int(np.flatnonzero(ids == ids[row])[0])
        raise where.error(
            row,
            column,
            f"{entity} id {ids[row]!r} has a second row (the first is on {where.locate(first)}); "
            f"a side table has one row per {entity}",
        )


def _check_overlap(rows: np.ndarray, raw: np.ndarray, side: SideTable, entity: str) -> None:
    """No id in common is a mistake (another id column, "u1" against "1"), not a table of unknowns: every
    feature would be "unknown" and the run would train on nothing but the log, silently."""
    matched = int((rows >= 0).sum())
    if len(raw) == 0 or matched * 2 >= len(raw):
        return
    if matched:  # most without a row: worth a look (another id spelling for part of the table?)
        log.warning(
            "%s: only %d of the log's %d %ss have a row (column %r); the others' features are unknown",
            side.where.file,
            matched,
            len(raw),
            entity,
            side.id_column,
        )
        return
    log_ids = ", ".join(repr(str(v)) for v in raw[:3])
    table_ids = ", ".join(repr(str(v)) for v in side.ids[:3])
    raise DataError(
        f"{side.where.file}: none of its {len(side.ids):,} {entity} ids (column {side.id_column!r}) is in "
        f"the log (the log has e.g. {log_ids}, the table {table_ids}); the table's id column "
        f"must hold the log's {entity} ids (data.{entity}_col names the id column of both files)"
    )


# ------------------------------------------------------------------------------------------ encoding


def _encode(spec: FeatureSpec, side: SideTable, rows: np.ndarray, entity: str) -> EncodedFeature:
    name, column = side.columns[spec.name]
    has_row = rows >= 0
    if spec.kind == "float":
        return _encode_float(spec, _floats(column, side.where, name, spec), rows, has_row)
    if spec.kind == "token_seq":
        return _encode_token_seq(spec, _token_lists(column, side.where, name, spec), rows, has_row)
    text = _strings(column, side.where, name, spec)
    per_entity = np.where(has_row, text[np.maximum(rows, 0)], None)
    missing = int((has_row & pd.isna(per_entity)).sum())
    without_row = int((~has_row).sum())
    if spec.kind == "title":
        values = np.where(pd.isna(per_entity), "", per_entity).astype(object)
        return EncodedFeature(spec.name, spec.kind, [], values, without_row, missing)
    vocab, codes = _vocabulary(per_entity, spec.min_count)
    unknown = int((~pd.isna(per_entity) & (codes == UNKNOWN)).sum())
    return EncodedFeature(spec.name, spec.kind, vocab, codes, without_row, missing, unknown)


def _vocabulary(values: np.ndarray, min_count: int) -> tuple[list[str], np.ndarray]:
    """Sorted vocabulary of the values seen at least ``min_count`` times; codes (None -> UNKNOWN)."""
    counts = pd.Series(values).value_counts(dropna=True)
    known = sorted(str(v) for v, c in counts.items() if c >= min_count)
    index = pd.Index(known, dtype=object).get_indexer(values)
    codes = np.where(index >= 0, index + len(SPECIALS), UNKNOWN).astype(np.int64)
    return SPECIALS + known, codes


def _encode_token_seq(
    spec: FeatureSpec, side: tuple[np.ndarray, np.ndarray, np.ndarray], rows: np.ndarray, has_row: np.ndarray
) -> EncodedFeature:
    offsets, tokens, missing_rows = side
    safe = np.maximum(rows, 0)
    lengths = np.where(has_row, np.diff(offsets)[safe], 0)
    starts = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    owner = np.repeat(np.arange(len(rows)), lengths)
    position = np.arange(starts[-1]) - starts[:-1][owner]
    flat = tokens[np.repeat(offsets[:-1][safe], lengths) + position]
    vocab, codes = _vocabulary(flat, spec.min_count)
    width = spec.max_len or max(int(lengths.max(initial=0)), 1)
    matrix = np.full((len(rows), width), PAD, dtype=np.int64)
    keep = position < width  # longer lists keep their first max_len tokens
    matrix[owner[keep], position[keep]] = codes[keep]
    matrix[lengths == 0, 0] = UNKNOWN  # no row or an empty field: one explicit unknown token
    unknown = np.zeros(len(rows), dtype=bool)
    unknown[owner[codes == UNKNOWN]] = True
    return EncodedFeature(
        spec.name,
        spec.kind,
        vocab,
        matrix,
        without_row=int((~has_row).sum()),
        missing=int((has_row & missing_rows[safe]).sum()),
        unknown=int(unknown.sum()),
    )


def _encode_float(
    spec: FeatureSpec, side: np.ndarray, rows: np.ndarray, has_row: np.ndarray
) -> EncodedFeature:
    values = np.where(has_row, side[np.maximum(rows, 0)], np.nan)
    boundaries = list(spec.boundaries)
    present = values[~np.isnan(values)]
    if not boundaries and present.size:
        cuts = np.unique(np.quantile(present, np.arange(1, spec.buckets) / spec.buckets))
        boundaries = [float(c) for c in cuts if c > present.min()]  # no always-empty lowest bucket
    return EncodedFeature(
        spec.name,
        spec.kind,
        SPECIALS + bucket_labels(boundaries),
        bucket_ids(values, boundaries),
        without_row=int((~has_row).sum()),
        missing=int((has_row & np.isnan(values)).sum()),
        boundaries=boundaries,
    )


def _with_padding_row(feature: EncodedFeature) -> EncodedFeature:
    values = feature.values
    pad = np.full((1, *values.shape[1:]), "" if values.dtype == object else PAD, dtype=values.dtype)
    feature.values = np.concatenate([pad, values])
    return feature


# ------------------------------------------------------------------------------ column -> clean values


def _type_error(where: Where, name: str, typ: pa.DataType, spec: FeatureSpec, wanted: str) -> DataError:
    return DataError(
        f"{where.file}: column {name!r} has type {typ}; feature {spec.name!r} (kind {spec.kind}) "
        f"needs {wanted}"
    )


def _utf8(column: pa.ChunkedArray, where: Where, name: str) -> pa.ChunkedArray:
    """The column's plain values: a dictionary column (a pandas ``category`` saved to Parquet) decoded,
    bytes checked as UTF-8."""
    column = undictionary(column)
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return check_utf8(column, where, name)
    return column


def _strings(column: pa.ChunkedArray, where: Where, name: str, spec: FeatureSpec) -> np.ndarray:
    """Text, integers or integral floats -> object array of stripped str, None where empty."""
    column = _utf8(column, where, name)
    typ = column.type
    if pa.types.is_floating(typ):
        column = pc.if_else(pc.is_nan(column), None, column)  # NaN is how pandas writes a missing value
        values = column.to_numpy(zero_copy_only=False)
        whole = np.isnan(values) | (values == np.round(values))
        if spec.kind == "token" and whole.all():  # 24.0 from a Parquet column with nulls is the token "24"
            column = pc.cast(column, pa.int64())
            typ = column.type
    if not (
        pa.types.is_string(typ)
        or pa.types.is_large_string(typ)
        or pa.types.is_integer(typ)
        or pa.types.is_floating(typ)
        or pa.types.is_boolean(typ)
    ):
        raise _type_error(where, name, typ, spec, "text or numbers")
    text = pc.utf8_trim_whitespace(column.cast(pa.string()))
    if spec.kind == "token":
        text = _nan_to_blank(text)
    text = _blank_to_null(text, spec)
    return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)


def _token_lists(
    column: pa.ChunkedArray, where: Where, name: str, spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (offsets [R + 1], tokens object [T], missing [R] bool): a text field split at ``spec.sep`` (or
    whitespace), or a list column; empty tokens are dropped, a row without tokens is missing."""
    column = _utf8(column, where, name)
    typ = column.type
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        inner = typ.value_type
        if not (pa.types.is_string(inner) or pa.types.is_large_string(inner) or pa.types.is_integer(inner)):
            raise _type_error(where, name, typ, spec, "text or a list of strings")
        lists = pc.list_flatten(column)
        parents = pc.list_parent_indices(column)
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        split = pc.split_pattern(column, spec.sep) if spec.sep else pc.utf8_split_whitespace(column)
        lists, parents = pc.list_flatten(split), pc.list_parent_indices(split)
    else:
        raise _type_error(where, name, typ, spec, "text or a list of strings")
    tokens = _blank_to_null(_nan_to_blank(pc.utf8_trim_whitespace(lists.cast(pa.string()))), spec)
    keep = pc.invert(pc.is_null(tokens)).to_numpy(zero_copy_only=False)
    tokens = np.asarray(tokens.to_numpy(zero_copy_only=False), dtype=object)[keep]
    parents = np.asarray(parents.to_numpy(zero_copy_only=False), dtype=np.int64)[keep]
    counts = np.bincount(parents, minlength=len(column))
    offsets = np.zeros(len(column) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, tokens, counts == 0


def _floats(column: pa.ChunkedArray, where: Where, name: str, spec: FeatureSpec) -> np.ndarray:
    """Numbers (or text holding numbers) -> float64 with NaN where empty; anything else is an error."""
    column = _utf8(column, where, name)
    typ = column.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        column = _blank_to_null(_nan_to_blank(pc.utf8_trim_whitespace(column)), spec)
    elif pa.types.is_floating(typ):
        column = pc.if_else(pc.is_nan(column), None, column)  # NaN is how pandas stores a missing number
    elif not (pa.types.is_integer(typ) or pa.types.is_decimal(typ)):
        raise _type_error(where, name, typ, spec, "numbers")
    present = pc.invert(pc.is_null(column)).to_numpy(zero_copy_only=False)
    values = np.full(len(column), np.nan)
    if present.any():
        rows = np.flatnonzero(present)
        try:
            parsed = to_numbers(column.filter(pa.array(present)), _shifted(where, rows), name, "feature")
        except DataError as exc:
            if "is not a number" not in str(exc):
                raise
            # A category declared as a number, or a word meaning "missing" (ML-100K's "unkonwn" year):
            # say which declaration to change for either.
            word = re.search(r": ('[^']*'|\"[^\"]*\") is not a number", str(exc))
            missing = f"na_values: [{word.group(1)}]" if word else "na_values"
            raise DataError(
                f"{exc}; feature {spec.name!r} is declared kind float: declare it kind token if its values "
                f"are categories, or, if that value means missing, add it to the feature's {missing}"
            ) from None
        values[rows] = parsed
    return values


def _nan_to_blank(text: pa.ChunkedArray | pa.Array):
    """``nan`` (any case) -> empty: how pandas writes a missing value as text (``astype(str)``), so a
    missing value of a number, token or token list, like an empty field, never a category called "nan"."""
    return pc.if_else(pc.equal(pc.utf8_lower(text), "nan"), "", text)


def _blank_to_null(text: pa.ChunkedArray | pa.Array, spec: FeatureSpec):
    """Empty strings and the declared ``na_values`` -> null (a missing value)."""
    blank = pc.equal(pc.utf8_length(text), 0)
    if spec.na_values:
        blank = pc.or_(blank, pc.is_in(text, value_set=pa.array(spec.na_values, pa.string())))
    return pc.if_else(blank, None, text)


def _shifted(where: Where, rows: np.ndarray) -> Where:
    """``where`` for a filtered column: row k of the filtered values is row ``rows[k]`` of the file."""
    at = where.value_error
    error = None if at is None else lambda k, column, problem: at(int(rows[k]), column, problem)
    return Where(where.file, lambda k: where.locate(int(rows[k])), error)
