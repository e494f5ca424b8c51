"""A new user's own logs (session 18): ISO times with zones and fractions, a header-less file read with a
header, side tables whose ids pandas wrote as floats or whose id column is named otherwise, UTF-16 files."""

from __future__ import annotations

import json
import logging

import pytest
from data_fixtures import cfg, sequences_by_user, write_parquet

from metarec_dist.data import DataError, prepare_data
from metarec_dist.data.config import FeatureSpec

LOG = "uid,sku,ts\n"


def _string_cfg(path, **kwargs):
    return cfg(format="auto", path=str(path), string_ids=True, valid_frac=0.0, test_frac=0.0, **kwargs)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_iso_times_with_a_zone_or_fractional_seconds_are_timestamps(tmp_path, suffix):
    # Each user's rows out of time order in the file; one column mixes zoned, naive and date-only forms
    # (what a log merged from two exports looks like), and a date's own "-01" is not a zone.
    rows = [
        ("u1", "b", "2020-01-01T12:00:00.250+02:00"),  # 10:00:00.25 UTC: after "a"
        ("u1", "a", "2020-01-01 10:00:00"),
        ("u2", "c", "2020-01-03"),
        ("u2", "d", "2020-01-02T23:59:59.5Z"),  # before "c"
    ]
    path = tmp_path / f"log.{suffix}"
    if suffix == "csv":
        path.write_text(LOG + "".join(",".join(r) + "\n" for r in rows))
    else:
        records = [dict(zip(("uid", "sku", "ts"), r, strict=True)) for r in rows]
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    prepared = prepare_data(_string_cfg(path, user_col="uid", item_col="sku", time_col="ts"))
    items = prepared.item_raw_ids
    assert [[items[i - 1] for i in seq] for seq in sequences_by_user(prepared)] == [["a", "b"], ["d", "c"]]


def test_a_header_less_log_read_with_a_header_says_to_set_data_header(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("u1,B001,4,1600000000\nu1,B002,5,1600000001\n")
    with pytest.raises(DataError, match=r"log\.csv: .*Line 1 looks like data, not a header .*header=false"):
        prepare_data(_string_cfg(path))
    with pytest.raises(DataError, match=r"column 'uid' \(data.user_col\) not found.*data\.header=false"):
        prepare_data(_string_cfg(path, user_col="uid"))


def _with_items(tmp_path, table: str, **kwargs):
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp\n1,10,1\n1,11,2\n2,10,3\n2,12,4\n")
    side = tmp_path / "items.csv"
    side.write_text(table)
    specs = [FeatureSpec(name="genre", kind="token")]
    return cfg(
        format="csv",
        path=str(log),
        item_features_path=str(side),
        item_features=specs,
        valid_frac=0.0,
        test_frac=0.0,
        **kwargs,
    )


def test_side_table_ids_written_as_floats_match_integer_ids(tmp_path):
    # pandas writes an integer id column with a gap as 10.0, 11.0; the log's own CSV reader takes those.
    config = _with_items(tmp_path, "item_id,genre\n10.0,a\n11.0,b\n12.,a\n")
    genre = prepare_data(config).features.item["genre"]
    assert genre.without_row == 0 and genre.unknown == 0


def test_a_side_table_id_column_named_otherwise_says_to_rename_it(tmp_path):
    config = _with_items(tmp_path, "sku,genre\n10,a\n11,b\n12,a\n", item_col="item_id")
    expected = r"items\.csv: no item id column found \(looked for item_id, itemid,"
    with pytest.raises(DataError, match=expected) as e:
        prepare_data(config)
    assert "item_id, item_id" not in str(e.value)  # the configured name is not listed twice
    assert "Name the table's item id column 'item_id' as in the log" in str(e.value)
    config = _with_items(tmp_path, "10,a\n11,b\n12,a\n")
    with pytest.raises(DataError, match=r"Line 1 looks like data.*a side table needs a header line"):
        prepare_data(config)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_utf16_file_is_named_as_such(tmp_path, suffix):
    path = tmp_path / f"log.{suffix}"
    text = "user_id,item_id,timestamp\n1,10,1\n" if suffix == "csv" else '{"user_id": 1, "item_id": 10}\n'
    path.write_bytes(text.encode("utf-16"))
    with pytest.raises(DataError, match=r"the file is UTF-16 .*--set data\.encoding=utf-16"):
        prepare_data(cfg(format="auto", path=str(path), ordered_rows=True))


def test_header_false_without_columns_on_an_auto_csv_names_data_columns(tmp_path):
    # data.format=auto: the config's own check (format csv/tsv only) cannot see that the file is a csv.
    path = tmp_path / "log.csv"
    path.write_text("1,10,1\n1,11,2\n")
    with pytest.raises(DataError, match=r"log\.csv: data\.header=false needs the column names in order"):
        prepare_data(cfg(format="auto", path=str(path), header=False))


def test_header_false_and_columns_for_parquet_are_a_warning(tmp_path, caplog, monkeypatch):
    from metarec_dist.data import layout

    monkeypatch.setattr(layout, "_SEP_WARNED", set())
    path = write_parquet(tmp_path / "log.parquet")
    with caplog.at_level(logging.WARNING):
        prepare_data(cfg(format="auto", path=str(path), header=False, columns=["a", "b", "c", "d"]))
    assert f"data.header=false and data.columns=['a', 'b', 'c', 'd'] ignored: {path} (parquet)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        prepare_data(cfg(format="auto", path=str(path)))  # nothing set that it ignores: no warning
    assert "ignored" not in caplog.text


def test_a_word_in_a_float_feature_suggests_na_values_too(tmp_path):
    # ML-100K's release year is "unkonwn" for one film: a missing value, not a category.
    config = _with_items(tmp_path, "item_id,genre\n10,1995\n11,unkonwn\n12,1997\n")
    config.item_features = [FeatureSpec(name="genre", kind="float")]
    with pytest.raises(DataError, match=r"line 3, .*declare it kind token .*na_values: \['unkonwn'\]$"):
        prepare_data(config)
    config.item_features = [FeatureSpec(name="genre", kind="float", na_values=["unkonwn"])]
    assert prepare_data(config).features.item["genre"].missing == 1


def test_filters_that_leave_nothing_name_the_filter_and_the_key(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,rating,timestamp\n1,10,4,1\n1,11,5,2\n2,10,1,3\n")
    with pytest.raises(
        DataError,
        match=r"3 read; rating >= 6 dropped 3\); the ratings here go from 1 to 5: lower data\.rating_thr",
    ):
        prepare_data(cfg(format="csv", path=str(path), rating_threshold=6.0))
    with pytest.raises(DataError, match=r"3 read; 5-core dropped 3\); lower data\.kcore \(now 5\)"):
        prepare_data(cfg(format="csv", path=str(path), kcore=5))


def test_a_feature_without_a_kind_says_it_is_missing():
    with pytest.raises(ValueError, match=r"item_features\[0\]\.kind: missing for feature 'genre'; give one"):
        FeatureSpec(name="genre").check("data.item_features[0]")


@pytest.mark.parametrize(("name", "sep"), [("users.csv", ","), ("users.tsv", "\t")])
def test_data_sep_for_the_log_does_not_break_a_side_table_split_as_its_extension_says(tmp_path, name, sep):
    log = tmp_path / "log.csv"
    log.write_text("user_id;item_id;timestamp\n1;10;1\n1;11;2\n2;10;3\n2;12;4\n")  # a ';' export
    side = tmp_path / name
    side.write_text(f"user_id{sep}gender\n1{sep}F\n2{sep}M\n")  # written by pandas: its own separator
    specs = [FeatureSpec(name="gender", kind="token")]
    config = cfg(format="csv", path=str(log), sep=";", user_features_path=str(side), user_features=specs)
    config.valid_frac = config.test_frac = 0.0
    gender = prepare_data(config).features.user["gender"]
    assert gender.without_row == 0 and gender.unknown == 0 and gender.values.tolist() == [2, 3]
    side.write_text("user_id|gender\n1|F\n2|M\n")  # neither data.sep nor the extension's: still an error
    with pytest.raises(DataError, match=rf"{name}: line 1 \(the header\) is one column"):
        prepare_data(config)


def test_quoted_header_names_after_a_blank_are_the_names(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text('"user_id", "item_id", "timestamp"\n1, 10, 1\n1, 11, 2\n2, 10, 3\n2, 11, 4\n')
    prepared = prepare_data(cfg(format="csv", path=str(path), valid_frac=0.0, test_frac=0.0))
    assert sequences_by_user(prepared) == [[1, 2], [1, 2]] and prepared.item_raw_ids == ["10", "11"]


def test_quoted_string_ids_after_a_blank_lose_their_quotes(tmp_path):
    # `"u1", "B1"`: Arrow keeps a quote that is not a field's first character; the ids are B1, not '"B1"'.
    path = tmp_path / "log.csv"
    rows = ['"u1", "B1", 1', '"u1", "B""2", 2', '"u2", "B1", 3', '"u2", B3, 4']
    path.write_text('"user_id", "item_id", "timestamp"\n' + "\n".join(rows) + "\n")
    prepared = prepare_data(cfg(format="csv", path=str(path), string_ids=True, valid_frac=0.0, test_frac=0.0))
    assert sorted(prepared.item_raw_ids) == ['B"2', "B1", "B3"]
