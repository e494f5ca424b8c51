"""Side information (data.user_features / data.item_features): parsing of every kind, missing and unknown
values, users/items without a row, every side-table format, errors naming file/line/column, the cache."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_fixtures import (
    cfg,
    write_csv,
    write_recbole,
    write_recbole_side,
    write_side_csv,
    write_side_jsonl,
    write_side_parquet,
)

from metarec_dist.cli import main
from metarec_dist.config import load_config
from metarec_dist.data import DataError, cache, pipeline, prepare_data
from metarec_dist.data.config import DataConfig, FeatureSpec
from metarec_dist.data.features import PAD, UNKNOWN

# Users 1..4 -> ids 0..3; items 10, 20, 30, 40 -> ids 1..4 (row 0 of an item feature is the padding item).
USER_SPECS = [
    FeatureSpec("age", "float", boundaries=[30.0, 50.0]),
    FeatureSpec("gender", "token"),
    FeatureSpec("occupation", "token", min_count=2),  # "technician" is seen once: unknown
]
ITEM_SPECS = [
    FeatureSpec("genres", "token_seq", column="class"),
    FeatureSpec("year", "float", column="release_year", buckets=2),
    FeatureSpec("title", "title", column="movie_title"),
]


def _recbole(tmp_path, **kwargs):
    folder = tmp_path / "ml"
    inter = write_recbole(folder)
    write_recbole_side(folder)
    return cfg(
        format="recbole", path=str(inter), user_features=USER_SPECS, item_features=ITEM_SPECS, **kwargs
    )


def _tables(features) -> dict:
    out = {}
    for entity in ("user", "item"):
        for name, f in getattr(features, entity).items():
            values = f.values.tolist()
            out[f"{entity}/{name}"] = (
                f.kind,
                f.vocab,
                values,
                f.without_row,
                f.missing,
                f.unknown,
                f.boundaries,
            )
    return out


def test_recbole_side_tables_encode_every_kind(tmp_path):
    features = prepare_data(_recbole(tmp_path)).features
    user, item = features.user, features.item

    assert user["age"].vocab == ["[PAD]", "[UNK]", "< 30", "[30, 50)", ">= 50"]
    assert user["age"].values.tolist() == [2, 4, 3, UNKNOWN]  # 24, 53, 33, no row
    assert user["gender"].vocab == ["[PAD]", "[UNK]", "F", "M"]
    assert user["gender"].values.tolist() == [3, 2, UNKNOWN, UNKNOWN]  # M, F, empty, no row
    assert (user["gender"].missing, user["gender"].without_row, user["gender"].unknown) == (1, 1, 0)
    # min_count=2 over the users in the data (user 5 has no interactions and does not count).
    assert user["occupation"].vocab == ["[PAD]", "[UNK]", "other"]
    assert user["occupation"].values.tolist() == [UNKNOWN, 2, 2, UNKNOWN]
    assert (user["occupation"].unknown, user["occupation"].without_row) == (1, 1)

    genres = item["genres"]
    assert genres.vocab == ["[PAD]", "[UNK]", "Comedy", "Drama"]
    assert genres.values.tolist() == [[PAD, PAD], [2, 3], [3, PAD], [UNKNOWN, PAD], [UNKNOWN, PAD]]
    assert (genres.missing, genres.without_row) == (1, 1)  # item 30: empty field; item 40: no row
    year = item["year"]
    assert year.boundaries == [1996.0]  # the median of the years present (1995, 1997)
    assert year.values.tolist() == [PAD, 2, UNKNOWN, 3, UNKNOWN]
    assert (year.missing, year.without_row) == (1, 1)
    assert item["title"].values.tolist() == ["", "Ten", "Twenty, The", "Thirty", ""]
    assert item["title"].without_row == 1 and item["title"].vocab == []


def test_lookup_maps_unseen_and_missing_values_to_unknown(tmp_path):
    features = prepare_data(_recbole(tmp_path)).features
    assert features.user["gender"].lookup("F") == 2
    assert features.user["gender"].lookup("X") == UNKNOWN
    assert features.user["gender"].lookup("") == UNKNOWN
    assert features.user["occupation"].lookup("technician") == UNKNOWN  # below min_count
    assert features.user["age"].lookup(70) == 4
    assert features.item["genres"].lookup("Drama Western") == [3, UNKNOWN]
    assert features.item["genres"].lookup(None) == [UNKNOWN]


def _same_tables_from(kind: str, tmp_path) -> DataConfig:
    inter = write_recbole(tmp_path / "log")  # no .user next to it: the side tables come from the paths
    if kind == "csv":
        user, item = write_side_csv(tmp_path / "side")
        users = [USER_SPECS[0], FeatureSpec("gender", "token", column="sex"), USER_SPECS[2]]
        items = [
            FeatureSpec("genres", "token_seq", column="genres", sep="|"),
            FeatureSpec("year", "float", column="year", buckets=2),
            FeatureSpec("title", "title"),
        ]
    else:
        user, item = (write_side_parquet if kind == "parquet" else write_side_jsonl)(tmp_path / "side")
        users, items = USER_SPECS, ITEM_SPECS
    return cfg(
        format="recbole",
        path=str(inter),
        user_features=users,
        item_features=items,
        user_features_path=str(user),
        item_features_path=str(item),
    )


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl"])
def test_every_side_table_format_gives_the_same_tables(tmp_path, kind):
    expected = _tables(prepare_data(_recbole(tmp_path / "a")).features)
    assert _tables(prepare_data(_same_tables_from(kind, tmp_path / "b")).features) == expected


def test_user_splits_carry_the_tables_with_each_split_users_rows(tmp_path):
    prepared = prepare_data(_recbole(tmp_path))
    splits = prepared.user_splits()
    assert splits.features.item is prepared.features.item
    # Users 1, 2 train; 3 valid; 4 test (data_fixtures.EXPECTED_SPLIT).
    assert {s: u.tolist() for s, u in splits.features.split_users.items()} == {
        "train": [0, 1],
        "valid": [2],
        "test": [3],
    }
    gender = splits.features.user["gender"].values
    assert gender[splits.features.split_users["train"]].tolist() == [3, 2]


def test_no_features_declared_leaves_the_data_unchanged(tmp_path):
    folder = tmp_path / "ml"
    inter = write_recbole(folder)
    write_recbole_side(folder)
    assert prepare_data(cfg(format="recbole", path=str(inter))).features is None


# ------------------------------------------------------------------------------------------ errors


def test_duplicate_id_names_file_line_and_column(tmp_path):
    config = _same_tables_from("csv", tmp_path)
    path = tmp_path / "side" / "users.csv"
    path.write_text(path.read_text() + "2,60,F,other\n")
    with pytest.raises(
        DataError,
        match=r"users\.csv: line 6, column 'userId': user id '2' has a second row "
        r"\(the first is on line 3\)",
    ):
        prepare_data(config)


def test_unparsable_float_names_file_line_and_column(tmp_path):
    config = _recbole(tmp_path)
    path = tmp_path / "ml" / "ml.user"
    path.write_text(path.read_text().replace("\t53\t", "\tfifty\t"))
    with pytest.raises(
        DataError,
        match=r"ml\.user: line 3, column 'age:token': 'fifty' is not a number; feature 'age' is declared "
        r"kind float: declare it kind token if its values are categories",
    ):
        prepare_data(config)


def test_declared_missing_values_are_missing_not_errors(tmp_path):
    config = _recbole(tmp_path)
    path = tmp_path / "ml" / "ml.user"
    path.write_text(path.read_text().replace("\t53\t", "\tunknown\t"))
    age = FeatureSpec("age", "float", boundaries=[30.0, 50.0], na_values=["unknown"])
    features = prepare_data(DataConfig(**{**config.__dict__, "user_features": [age]})).features
    assert features.user["age"].values.tolist() == [2, UNKNOWN, 3, UNKNOWN]
    assert features.user["age"].missing == 1


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_nan_in_a_float_feature_is_a_missing_value(tmp_path, fmt):
    """pandas stores a missing number as NaN (a float NaN in Parquet, "nan" after astype(str)): missing, as
    the empty field is, not an error that says to declare the feature a token."""
    config = _recbole(tmp_path)
    age = FeatureSpec("age", "float", boundaries=[30.0, 50.0])
    if fmt == "csv":
        side = tmp_path / "users.csv"
        side.write_text("user_id,age\n1,24\n2,nan\n3,33\n4,NaN\n")
    else:
        side = tmp_path / "users.parquet"
        pq.write_table(pa.table({"user_id": [1, 2, 3, 4], "age": [24.0, float("nan"), 33.0, None]}), side)
    changes = {"user_features": [age], "user_features_path": str(side)}
    features = prepare_data(DataConfig(**{**config.__dict__, **changes})).features
    assert features.user["age"].values.tolist() == [2, UNKNOWN, 3, UNKNOWN]
    assert features.user["age"].missing == 2


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_nan_in_a_token_feature_is_a_missing_value_not_a_category(tmp_path, fmt):
    """pandas writes a missing category as NaN (a float NaN, or the text "nan" after astype(str)): missing,
    as in a float feature and as an empty field is, never a category "nan" in the vocabulary."""
    config = _recbole(tmp_path)
    specs = [FeatureSpec("gender", "token"), FeatureSpec("tags", "token_seq", sep="|")]
    if fmt == "csv":
        side = tmp_path / "users.csv"
        side.write_text("user_id,gender,tags\n1,M,a|b\n2,nan,nan\n3,F,a|NaN\n4, NaN ,\n")
    else:
        columns = {
            "user_id": [1, 2, 3, 4],
            "gender": ["M", "nan", "F", None],
            "tags": ["a|b", "nan", "a|NaN", ""],
        }
        table = pa.table(columns)
        side = tmp_path / f"users.{fmt}"
        if fmt == "parquet":
            pq.write_table(table, side)
        else:
            side.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    changes = {"user_features": specs, "user_features_path": str(side)}
    features = prepare_data(DataConfig(**{**config.__dict__, **changes})).features
    gender, tags = features.user["gender"], features.user["tags"]
    assert "nan" not in [v.lower() for v in gender.vocab + tags.vocab]
    assert gender.vocab[2:] == ["F", "M"] and gender.values.tolist() == [3, UNKNOWN, 2, UNKNOWN]
    assert gender.missing == 2 and gender.unknown == 0
    assert tags.vocab[2:] == ["a", "b"] and tags.missing == 2
    assert tags.values.tolist() == [[2, 3], [UNKNOWN, PAD], [2, PAD], [UNKNOWN, PAD]]
    assert features.user["gender"].lookup("nan") == UNKNOWN  # a request's "nan" too


def test_pandas_category_columns_in_parquet_read_as_their_values(tmp_path):
    """pandas saves a ``category`` column as a Parquet dictionary column: the same tables as plain values."""
    config = _same_tables_from("parquet", tmp_path)
    expected = _tables(prepare_data(config).features)
    path = tmp_path / "side" / "users.parquet"
    table = pq.read_table(path)
    for name in ("gender", "occupation", "age"):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, table.column(name).dictionary_encode())
    pq.write_table(table, path)
    assert pa.types.is_dictionary(pq.read_table(path).schema.field("gender").type)
    assert _tables(prepare_data(config).features) == expected


def test_a_side_table_line_that_is_not_json_is_named(tmp_path):
    config = _same_tables_from("jsonl", tmp_path)
    path = tmp_path / "side" / "items.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:2], '{"item_id": 30, "movie_title": ', *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=r"items\.jsonl: line 3, column \d+: not valid JSON"):
        prepare_data(config)


def test_wrong_column_type_is_an_error_naming_the_column(tmp_path):
    config = _same_tables_from("parquet", tmp_path)
    path = tmp_path / "side" / "users.parquet"
    table = pq.read_table(path)
    table = table.set_column(2, "gender", pa.array([["M"], ["F"], [], ["M"]]))
    pq.write_table(table, path)
    with pytest.raises(
        DataError,
        match=r"users\.parquet: column 'gender' has type list<\w+: string>; "
        r"feature 'gender' \(kind token\) needs text or numbers",
    ):
        prepare_data(config)


def test_missing_column_names_the_declaration(tmp_path):
    config = _recbole(tmp_path)
    bad = DataConfig(**{**config.__dict__, "item_features": [ITEM_SPECS[0], FeatureSpec("rating", "float")]})
    with pytest.raises(DataError, match=r"column 'rating' \(data\.item_features\[1\]\.name\) not found"):
        prepare_data(bad)


def test_no_side_table_for_declared_features_is_an_error(tmp_path):
    path = write_csv(tmp_path / "log.csv")
    with pytest.raises(DataError, match=r"data\.user_features: declared.*data\.user_features_path"):
        prepare_data(cfg(format="csv", path=str(path), user_features=USER_SPECS[:1]))


@pytest.mark.parametrize(
    ("yaml_features", "message"),
    [
        ("[{name: age, kind: tokn}]", r"data\.user_features\[0\]\.kind: unknown 'tokn'"),
        ("[{name: age, kind: token}, {name: age, kind: float}]", r"data\.user_features\[1\]\.name: .*twice"),
        ("[{kind: token}]", r"data\.user_features\[0\]\.name"),
        ("[{name: age, kind: token, buckets: 4}]", r"data\.user_features\[0\]\.buckets: does not apply"),
        ("[{name: age, kind: float, boundaries: [3, 1]}]", r"data\.user_features\[0\]\.boundaries"),
        ("[{name: age, kind: token, colour: red}]", r"data\.user_features\[0\]\.colour"),
        ("[{name:age,kind:token}]", r"\.name:age.*YAML needs a space after each colon: \{name: age, kind"),
    ],
)
def test_bad_declarations_name_the_key(yaml_features, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [f"data.user_features={yaml_features}"])


def test_config_loader_builds_the_declarations():
    cfg_ = load_config(None, ["data.item_features=[{name: genres, kind: token_seq, sep: '|', max_len: 3}]"])
    assert cfg_.data.item_features == [FeatureSpec("genres", "token_seq", sep="|", max_len=3)]


# ------------------------------------------------------------------------------------------- cache


def test_cache_keys_on_the_declaration_and_the_side_files(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    config = _recbole(tmp_path, cache=True, cache_dir=str(root))
    files = [tmp_path / "ml" / f"ml.{s}" for s in ("inter", "item", "user")]
    key = cache.cache_key(files, config)
    plain = DataConfig(**{**config.__dict__, "user_features": [], "item_features": []})
    assert cache.cache_key(files, plain) != key
    recoded = [FeatureSpec("age", "token"), *USER_SPECS[1:]]
    assert cache.cache_key(files, DataConfig(**{**config.__dict__, "user_features": recoded})) != key

    first = prepare_data(config)
    monkeypatch.setattr(pipeline, "read_layout", lambda *a, **k: pytest.fail("the log was read again"))
    second = prepare_data(config)
    assert _tables(second.features) == _tables(first.features)
    # A changed .user file is a new entry (its size/mtime are keyed like the log's).
    monkeypatch.undo()
    user = tmp_path / "ml" / "ml.user"
    user.write_text(user.read_text().replace("\tM\ttechnician", "\tF\ttechnician"))
    stat = user.stat()
    os.utime(user, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = prepare_data(config)
    assert third.features.user["gender"].values.tolist() == [2, 2, UNKNOWN, UNKNOWN]
    assert len(list(root.iterdir())) == 2


# ------------------------------------------------------------------------------------------- stats


def test_data_stats_shows_the_counts(tmp_path, capsys):
    folder = tmp_path / "ml"
    inter = write_recbole(folder)
    write_recbole_side(folder)
    sets = [
        "data.user_features=[{name: gender, kind: token}, {name: occupation, kind: token, min_count: 2}]",
        "data.item_features=[{name: genres, kind: token_seq, column: class}, "
        "{name: year, kind: float, column: release_year, buckets: 2}]",
        "data.min_history=1",
        "data.valid_frac=0.25",
        "data.test_frac=0.25",
        "data.cache=false",
    ]
    argv = ["data", "stats", "--path", str(inter), "--format", "recbole"]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    out = capsys.readouterr().out
    assert "user feature gender (token): 2 values; 1 users without a row, 1 missing, 0 unknown" in out
    assert "user feature occupation (token): 1 values; 1 users without a row, 0 missing, 1 unknown" in out
    assert "item feature genres (token_seq): 2 values; 1 items without a row, 1 missing, 0 unknown" in out
    assert "item feature year (float): 2 buckets; 1 items without a row, 1 missing" in out


def test_data_stats_with_a_config_and_a_path_reads_the_path_with_the_config(tmp_path, capsys):
    """--path with --config: the config's features and filters on that file (the config was ignored)."""
    folder = tmp_path / "ml"
    inter = write_recbole(folder)
    write_recbole_side(folder)
    config = tmp_path / "my.yaml"
    config.write_text(
        "data:\n  format: synthetic\n  cache: false\n  min_history: 1\n"
        "  user_features: [{name: gender, kind: token}]\n"
    )
    assert main(["data", "stats", "--config", str(config), "--path", str(inter)]) == 0
    out = capsys.readouterr().out
    assert f"data: {inter} (RecBole)" in out and "user feature gender (token): 2 values" in out


def test_padding_row_of_items_is_padding(tmp_path):
    features = prepare_data(_recbole(tmp_path)).features
    for f in features.item.values():
        assert np.all(f.values[0] == ("" if f.kind == "title" else PAD))


def test_token_seq_max_len_and_rare_tokens(tmp_path):
    config = _recbole(tmp_path)
    genres = FeatureSpec("genres", "token_seq", column="class", max_len=1, min_count=2)
    features = prepare_data(DataConfig(**{**config.__dict__, "item_features": [genres]})).features
    # Drama is on two items, Comedy on one (rare: unknown); max_len=1 keeps each item's first genre.
    assert features.item["genres"].vocab == ["[PAD]", "[UNK]", "Drama"]
    assert features.item["genres"].values.tolist() == [[PAD], [UNKNOWN], [2], [UNKNOWN], [UNKNOWN]]
    assert features.item["genres"].unknown == 1


def test_a_side_table_sharing_no_id_with_the_log_is_an_error(tmp_path, caplog):
    config = _same_tables_from("csv", tmp_path)
    path = tmp_path / "side" / "users.csv"
    lines = path.read_text().splitlines()
    shifted = [lines[0]] + [f"10{line}" for line in lines[1:]]  # 101 where the log says 1 (another id)
    path.write_text("\n".join(shifted) + "\n")
    with pytest.raises(
        DataError,
        match=r"users\.csv: none of its 4 user ids \(column .userId.\) is in the log .*'101'",
    ):
        prepare_data(config)
    path.write_text("\n".join(lines[:2] + [f"9{line}" for line in lines[2:]]) + "\n")
    with caplog.at_level("WARNING", logger="metarec_dist.data.side"):
        assert prepare_data(config).features.user["gender"].without_row == 3  # some in common: counted
    assert "users.csv: only 1 of the log's 4 users have a row (column 'userId')" in caplog.text
    caplog.clear()
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level("WARNING", logger="metarec_dist.data.side"):
        prepare_data(config)  # 3 of 4 users have a row (user 4 has none): no warning
    assert "have a row" not in caplog.text


def test_a_gzipped_side_table_gives_the_same_tables(tmp_path):
    import gzip

    config = _same_tables_from("csv", tmp_path)
    expected = _tables(prepare_data(config).features)
    plain = tmp_path / "side" / "users.csv"
    packed = plain.with_name("users.csv.gz")
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    config = dataclasses.replace(config, user_features_path=str(packed))
    assert _tables(prepare_data(config).features) == expected


def test_a_side_table_without_declared_features_is_named_in_a_warning(tmp_path, caplog):
    config = _same_tables_from("csv", tmp_path)
    config = dataclasses.replace(config, item_features=[])
    with caplog.at_level("WARNING", logger="metarec_dist.data.side"):
        assert "title" not in prepare_data(config).features.item
    assert "data.item_features_path is set but data.item_features declares no feature" in caplog.text
    assert "data.user_features_path" not in caplog.text
