"""Bad input: one DataError whose message names the file, the line (or row) and the column."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_fixtures import cfg, write_csv, write_u_data

from metarec_dist.data import DataConfig, DataError, prepare_data

HEADER = "user_id,item_id,rating,timestamp\n"
GOOD = "1,10,5,100\n2,20,3,50\n"


def _error(**kwargs) -> str:
    with pytest.raises(DataError) as info:
        prepare_data(cfg(**kwargs))
    assert isinstance(info.value, ValueError)
    return str(info.value)


def _csv(tmp_path, body: str | bytes, name: str = "log.csv"):
    path = tmp_path / name
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body)
    return path


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    message = _error(format="csv", path=str(missing))
    assert str(missing) in message and "not found" in message


def test_missing_file_inside_a_known_folder_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    message = _error(format="movielens", path=str(tmp_path / "empty"))
    assert str(tmp_path / "empty") in message and "u.data" in message


def test_unknown_format_in_config():
    with pytest.raises(ValueError, match=r"data\.format: unknown 'xml'"):
        DataConfig(format="xml", path="x.xml")


def test_auto_cannot_tell_the_format(tmp_path):
    path = _csv(tmp_path, "1 2\n", name="log.weird")
    message = _error(format="auto", path=str(path))
    assert str(path) in message and "data.format" in message


def test_missing_mapped_column(tmp_path):
    path = _csv(tmp_path, HEADER + GOOD)
    message = _error(format="csv", path=str(path), time_col="when")
    assert str(path) in message and "'when'" in message and "data.time_col" in message
    assert "user_id, item_id, rating, timestamp" in message


def test_missing_guessed_column(tmp_path):
    path = _csv(tmp_path, "user_id,timestamp\n1,5\n")
    message = _error(format="csv", path=str(path))
    assert str(path) in message and "no item id column" in message and "data.item_col" in message


def test_row_with_an_extra_field(tmp_path):
    path = _csv(tmp_path, HEADER + GOOD + "3,30,4,60,oops\n")
    message = _error(format="csv", path=str(path))
    assert f"{path}: line 4" in message and "extra field" in message and "'timestamp'" in message


def test_row_with_a_missing_field(tmp_path):
    path = _csv(tmp_path, HEADER + "\n" + GOOD + "3,30,4\n")  # the blank line still counts as a line
    message = _error(format="csv", path=str(path))
    assert f"{path}: line 5" in message and "column 'timestamp' is missing" in message


def test_extra_field_in_double_colon_file(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::100\n2::20::3::50::9\n")
    message = _error(format="auto", path=str(tmp_path / "ratings.dat"))
    assert "ratings.dat: line 2" in message and "'::'" in message


def test_non_integer_id(tmp_path):
    path = _csv(tmp_path, HEADER + GOOD + "abc,30,4,60\n")
    message = _error(format="csv", path=str(path))
    assert f"{path}: line 4, column 'user_id'" in message and "'abc' is not an integer" in message


def test_empty_id(tmp_path):
    path = _csv(tmp_path, HEADER + GOOD + "3,,4,60\n")
    message = _error(format="csv", path=str(path))
    assert f"{path}: line 4, column 'item_id'" in message and "empty item id" in message


def test_empty_id_with_string_ids(tmp_path):
    path = _csv(tmp_path, HEADER + GOOD + "  ,30,4,60\n")
    message = _error(format="csv", path=str(path), string_ids=True)
    assert f"{path}: line 4, column 'user_id'" in message and "empty user id" in message


def test_fractional_id(tmp_path):
    path = _csv(tmp_path, HEADER + GOOD + "3,30.5,4,60\n")
    message = _error(format="csv", path=str(path))
    assert f"{path}: line 4, column 'item_id'" in message and "not an integer" in message


def test_nan_timestamp(tmp_path):
    path = _csv(tmp_path, HEADER + GOOD + "3,30,4,nan\n")
    message = _error(format="csv", path=str(path))
    assert f"{path}: line 4, column 'timestamp'" in message and "nan is not a valid timestamp" in message


def test_non_numeric_timestamp(tmp_path):
    path = _csv(tmp_path, HEADER + GOOD + "3,30,4,yesterday\n")
    message = _error(format="csv", path=str(path))
    assert f"{path}: line 4, column 'timestamp'" in message and "'yesterday' is not a number" in message


def test_empty_timestamp(tmp_path):
    path = _csv(tmp_path, HEADER + GOOD + "3,30,4,\n")
    message = _error(format="csv", path=str(path))
    assert f"{path}: line 4, column 'timestamp'" in message and "empty timestamp" in message


def test_non_numeric_rating_when_thresholding(tmp_path):
    path = _csv(tmp_path, HEADER + GOOD + "3,30,great,60\n")
    message = _error(format="csv", path=str(path), rating_threshold=4.0)
    assert f"{path}: line 4, column 'rating'" in message


def test_empty_file(tmp_path):
    path = _csv(tmp_path, "")
    message = _error(format="csv", path=str(path))
    assert str(path) in message and "empty" in message


def test_header_only_file(tmp_path):
    path = _csv(tmp_path, HEADER)
    message = _error(format="csv", path=str(path))
    assert str(path) in message and "only a header" in message


def test_blank_lines_only_headerless(tmp_path):
    (tmp_path / "u.data").write_text("\n\n")
    message = _error(format="movielens", path=str(tmp_path / "u.data"))
    assert "u.data" in message and "no data rows" in message


def test_non_utf8_value(tmp_path):
    path = _csv(tmp_path, (HEADER + GOOD).encode() + b"3,caf\xe9,4,60\n")
    for string_ids in (False, True):
        message = _error(format="csv", path=str(path), string_ids=string_ids)
        assert f"{path}: line 4, column 'item_id'" in message and "UTF-8" in message and "0xe9" in message


def test_non_utf8_header(tmp_path):
    path = _csv(tmp_path, b"user_id,item_id,caf\xe9\n1,2,3\n")
    message = _error(format="csv", path=str(path))
    assert f"{path}: line 1" in message and "UTF-8" in message


def test_non_utf8_in_headerless_tab_file(tmp_path):
    (tmp_path / "u.data").write_bytes(b"1\t10\t5\t100\n2\t2\xff0\t3\t50\n")
    message = _error(format="movielens", path=str(tmp_path / "u.data"))
    assert "u.data: line 2, column 'item_id'" in message and "UTF-8" in message


def test_parquet_bad_value_names_the_row(tmp_path):
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": ["1", "2", "x"], "item_id": [1, 2, 3], "timestamp": [1, 2, 3]}), path)
    message = _error(format="parquet", path=str(path))
    assert f"{path}: row 3, column 'user_id'" in message and "'x'" in message


def test_parquet_null_timestamp(tmp_path):
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": [1, 2], "timestamp": [1.0, None]}), path)
    message = _error(format="parquet", path=str(path))
    assert f"{path}: row 2, column 'timestamp'" in message and "empty timestamp" in message


def test_not_a_parquet_file(tmp_path):
    path = _csv(tmp_path, HEADER + GOOD, name="log.parquet")
    message = _error(format="parquet", path=str(path))
    assert str(path) in message and "Parquet" in message


def test_jsonl_broken_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"user_id": 1, "item_id": 2, "timestamp": 3}) + '\n\n{"user_id": 2, \n')
    message = _error(format="jsonl", path=str(path))
    assert f"{path}: line 3" in message and "not valid JSON" in message


def test_jsonl_missing_value(tmp_path):
    path = tmp_path / "log.jsonl"
    lines = [{"user_id": 1, "item_id": 2, "timestamp": 3}, {"user_id": 2, "timestamp": 4}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    message = _error(format="jsonl", path=str(path))
    assert f"{path}: line 2, column 'item_id'" in message and "empty item id" in message


def test_jsonl_mixed_types(tmp_path):
    path = tmp_path / "log.jsonl"
    lines = [{"user_id": 1, "item_id": 2, "timestamp": 3}, {"user_id": "x", "item_id": 2, "timestamp": 4}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    message = _error(format="jsonl", path=str(path))
    assert str(path) in message and "'user_id'" in message and "line 2" in message


def test_threshold_without_ratings(tmp_path):
    path = _csv(tmp_path, "user_id,item_id,timestamp\n1,2,3\n")
    message = _error(format="csv", path=str(path), rating_threshold=3.0)
    assert str(path) in message and "rating" in message and "data.rating_col" in message


def test_error_message_for_movielens_names_the_file(tmp_path):
    path = write_u_data(tmp_path / "ml", rows=[(1, 10, 5.0, 100), (2, "ten", 3.0, 50)], with_items=False)
    message = _error(format="auto", path=str(path))
    assert f"{path}: line 2, column 'item_id'" in message


def test_bad_header_only_generic_tsv(tmp_path):
    path = write_csv(tmp_path / "log.tsv", rows=[], sep="\t")
    message = _error(format="tsv", path=str(path))
    assert "only a header" in message


def test_a_headerless_csv_read_with_a_header_says_so(tmp_path):
    for body in ("1,10,5,100\n1,20,3,50\n", "1,10,5,100\n2,20,3,50\n"):  # repeated or distinct values
        path = _csv(tmp_path, body)
        message = _error(format="csv", path=str(path))
        assert f"{path}: line 1 should be the header" in message and "holds only numbers" in message
        assert "data.header=false" in message and "data.columns=" in message


@pytest.mark.parametrize("indent", [None, 2])
def test_a_json_array_is_named_as_such(tmp_path, indent):
    path = tmp_path / "log.json"
    path.write_text(json.dumps([{"user_id": 1, "item_id": 2, "timestamp": 3}] * 2, indent=indent))
    message = _error(format="auto", path=str(path))
    assert f"{path}: line 1: a JSON array; the reader takes JSON Lines, one object per line" in message


@pytest.mark.parametrize(
    ("string_ids", "word"), [(False, "nan"), (True, "nan"), (True, "None"), (True, "NULL")]
)
def test_an_id_spelt_like_a_missing_value_is_an_error(tmp_path, string_ids, word):
    """pandas' astype(str) writes a missing id as 'nan' / 'None': as a string id it would silently become
    one user or item that every missing id shares."""
    path = _csv(tmp_path, HEADER + GOOD + f"3,{word},4,60\n")
    message = _error(format="csv", path=str(path), string_ids=string_ids)
    assert f"{path}: line 4, column 'item_id': '{word}' is a missing item id" in message


@pytest.mark.parametrize("string_ids", [False, True])
def test_a_header_line_in_a_file_read_without_one_is_named(tmp_path, string_ids):
    path = _csv(tmp_path, "user item\n1 10\n1 20\n2 10\n2 20\n", name="seq.txt")
    message = _error(format="user_item", path=str(path), string_ids=string_ids)
    assert (
        f"{path}: line 1 looks like a header line (user, item) but this file is read without one" in message
    )
    tsv = _csv(tmp_path, HEADER.replace(",", "\t") + GOOD.replace(",", "\t"), name="log.tsv")
    cols = ["user_id", "item_id", "rating", "timestamp"]
    message = _error(format="tsv", path=str(tsv), header=False, columns=cols, string_ids=string_ids)
    assert (
        "line 1 looks like a header line (user_id, item_id)" in message
        and "drop data.header=false" in message
    )


def test_a_line_per_user_in_a_user_item_file_says_one_pair_per_line(tmp_path):
    path = _csv(tmp_path, "1 10 20 30\n2 10 20\n", name="seq.txt")
    message = _error(format="user_item", path=str(path))
    assert f"{path}: line 1: 4 fields but 2 columns" in message and "one 'user item' pair per line" in message


@pytest.mark.parametrize(
    ("name", "fmt", "sep", "fix"),
    [
        ("log.csv", "csv", "\t", "--set data.format=tsv"),
        ("log.csv", "csv", ";", "--set data.sep=';'"),
        ("log.tsv", "tsv", ",", "--set data.format=csv"),
    ],
)
def test_a_file_split_at_the_wrong_separator_names_the_right_one(tmp_path, name, fmt, sep, fix):
    path = _csv(tmp_path, (HEADER + GOOD).replace(",", sep), name=name)
    message = _error(format=fmt, path=str(path))
    assert f"{path}: line 1 (the header) is one column" in message and fix in message


def test_a_missing_relative_data_path_names_the_folder_it_was_read_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _error(format="csv", path="logs/log.csv")
    assert "data.path: logs/log.csv not found (no such file or folder, relative to the current" in message
    assert f"current folder {tmp_path})" in message
