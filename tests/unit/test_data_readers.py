"""Every input format gives the same normalised per-user sequences."""

from __future__ import annotations

import logging
import shutil

import datasets
import numpy as np
import pytest
from data_fixtures import (
    EXPECTED,
    EXPECTED_SPLIT,
    ROWS,
    TITLES,
    cfg,
    sequences_by_user,
    write_csv,
    write_jsonl,
    write_parquet,
    write_ratings_csv,
    write_ratings_dat,
    write_recbole,
    write_recbole_side,
    write_u_data,
    write_user_item,
)

from metarec_dist.data import DataError, PreparedData, load_interactions, prepare_data
from metarec_dist.data.config import FeatureSpec


def check_prepared(prepared: PreparedData, titles: bool = False) -> None:
    assert sequences_by_user(prepared) == EXPECTED
    assert prepared.users["split"] == EXPECTED_SPLIT
    assert prepared.users["raw_user"] == ["1", "2", "3", "4"]
    assert prepared.users["user"] == [0, 1, 2, 3]
    assert prepared.num_items == 4
    assert prepared.item_raw_ids == ["10", "20", "30", "40"]
    if titles:
        assert prepared.item_titles is not None
        assert prepared.item_titles[2] == TITLES[20]


def test_users_table_schema(tmp_path):
    prepared = prepare_data(cfg(format="auto", path=str(write_u_data(tmp_path / "ml"))))
    assert isinstance(prepared.users, datasets.Dataset)
    features = prepared.users.features
    assert features["user"].dtype == "int64"
    assert features["raw_user"].dtype == "string"
    assert features["items"].feature.dtype == "int64"
    assert features["split"].dtype == "string"
    train = prepared.sequences("train")
    assert [s.tolist() for s in train] == EXPECTED[:2]
    assert all(s.dtype == np.int64 for s in train)
    assert [s.tolist() for s in prepared.sequences("test")] == [EXPECTED[3]]
    with pytest.raises(ValueError, match="split must be one of"):
        prepared.sequences("dev")


@pytest.mark.parametrize("as_dir", [True, False])
def test_movielens_100k(tmp_path, as_dir):
    path = write_u_data(tmp_path / "ml-100k")
    prepared = prepare_data(cfg(format="auto", path=str(path.parent if as_dir else path)))
    check_prepared(prepared)
    assert prepared.item_titles[4] == "Quarante é (1998)"  # u.item is Latin-1
    assert "MovieLens" in prepared.source


def test_movielens_1m_double_colon(tmp_path):
    check_prepared(
        prepare_data(cfg(format="movielens", path=str(write_ratings_dat(tmp_path / "ml-1m").parent))),
        titles=True,
    )


def test_movielens_ratings_csv(tmp_path):
    check_prepared(
        prepare_data(cfg(format="auto", path=str(write_ratings_csv(tmp_path / "ml-latest-small")))),
        titles=True,
    )


@pytest.mark.parametrize("as_dir", [True, False])
def test_recbole(tmp_path, as_dir):
    inter = write_recbole(tmp_path / "ml-100k")
    prepared = prepare_data(cfg(format="auto", path=str(inter.parent if as_dir else inter)))
    check_prepared(prepared, titles=True)
    assert prepared.item_titles == {
        1: "Ten (1995)",
        2: "Twenty, The (1996)",
        3: "Thirty (1997)",
        4: "Forty (1998)",
    }


def test_recbole_several_inter_files_needs_a_choice(tmp_path):
    write_recbole(tmp_path / "d", name="a")
    write_recbole(tmp_path / "d", name="b")
    with pytest.raises(DataError, match="several .inter files"):
        prepare_data(cfg(format="recbole", path=str(tmp_path / "d")))
    check_prepared(prepare_data(cfg(format="recbole", path=str(tmp_path / "d" / "b.inter"))))


def test_generic_csv_with_guessed_columns(tmp_path):
    check_prepared(prepare_data(cfg(format="csv", path=str(write_csv(tmp_path / "log.csv")))))


def test_generic_csv_with_mapping_and_custom_separator(tmp_path):
    path = write_csv(tmp_path / "log.txt", sep=";", header="who,what,stars,when")
    check_prepared(
        prepare_data(
            cfg(format="csv", path=str(path), sep=";", user_col="who", item_col="what", time_col="when")
        )
    )


def test_headerless_tsv_with_column_names(tmp_path):
    path = write_csv(tmp_path / "log.tsv", sep="\t", header="")
    check_prepared(
        prepare_data(
            cfg(
                format="tsv",
                path=str(path),
                header=False,
                columns=["u", "i", "r", "t"],
                user_col="u",
                item_col="i",
                time_col="t",
            )
        )
    )


def test_csv_with_bom_crlf_and_quotes(tmp_path):
    path = tmp_path / "log.csv"
    body = "user_id,item_id,rating,timestamp\r\n" + "".join(f'"{u}",{i},{r},"{t}"\r\n' for u, i, r, t in ROWS)
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    check_prepared(prepare_data(cfg(format="csv", path=str(path))))


def test_tsv_by_extension(tmp_path):
    check_prepared(prepare_data(cfg(format="auto", path=str(write_csv(tmp_path / "log.tsv", sep="\t")))))


def test_parquet(tmp_path):
    check_prepared(prepare_data(cfg(format="auto", path=str(write_parquet(tmp_path / "log.parquet")))))


def test_jsonl(tmp_path):
    check_prepared(prepare_data(cfg(format="jsonl", path=str(write_jsonl(tmp_path / "log.jsonl")))))


def _gzip(path):
    """``path`` gzip'd next to it as ``<name>.gz``; the plain file removed."""
    import gzip

    target = path.with_name(path.name + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return target


@pytest.mark.parametrize(
    ("name", "write", "fmt"),
    [
        ("log.csv", write_csv, "csv"),
        ("log.jsonl", write_jsonl, "jsonl"),
        ("seq.txt", write_user_item, "user_item"),
    ],
)
def test_gzipped_logs_are_read_as_the_plain_file(tmp_path, name, write, fmt):
    path = _gzip(write(tmp_path / name))
    if fmt != "user_item":  # format auto tells csv and jsonl by the extension before .gz
        check_prepared(prepare_data(cfg(format="auto", path=str(path))))
    check_prepared(prepare_data(cfg(format=fmt, path=str(path))))
    check_prepared(prepare_data(cfg(format=fmt, path=str(tmp_path))))  # the one such file in a folder


def test_errors_in_a_gzipped_log_name_the_line(tmp_path):
    path = _gzip(write_csv(tmp_path / "log.csv", rows=[*ROWS, (5, "x", 1.0, 9)]))
    with pytest.raises(DataError, match=r"log\.csv\.gz: line 12, column 'item_id': 'x' is not an integer"):
        prepare_data(cfg(format="auto", path=str(path)))
    path.write_bytes(path.read_bytes()[:30])  # cut short
    with pytest.raises(DataError, match=r"log\.csv\.gz: a gzip file that cannot be decompressed"):
        prepare_data(cfg(format="auto", path=str(path)))


@pytest.mark.parametrize("as_dir", [True, False])
def test_gzipped_recbole_atomic_files_are_read(tmp_path, as_dir):
    inter = write_recbole(tmp_path / "ml-100k")
    gz = _gzip(inter)
    _gzip(inter.with_suffix(".item"))  # titles from ml-100k.item.gz
    prepared = prepare_data(cfg(format="auto", path=str(gz.parent if as_dir else gz)))
    check_prepared(prepared, titles=True)
    assert prepared.item_titles[1] == "Ten (1995)"
    check_prepared(prepare_data(cfg(format="recbole", path=str(gz))), titles=True)


def test_gzipped_recbole_side_tables_are_found_next_to_the_log(tmp_path):
    folder = tmp_path / "ml"
    inter = _gzip(write_recbole(folder))
    user, _ = write_recbole_side(folder)
    _gzip(user)
    features = prepare_data(
        cfg(format="recbole", path=str(inter), user_features=[FeatureSpec("gender", "token")])
    ).features
    assert features.user["gender"].vocab[2:] == ["F", "M"]


def _zip(path, *extra):
    """``path`` zipped next to it as ``<name>.zip`` (with ``extra`` files too); the plain file removed."""
    import zipfile

    target = path.with_name(path.name + ".zip")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(path, path.name)
        for name in extra:
            archive.writestr(name, "x")
    path.unlink()
    return target


@pytest.mark.parametrize(
    ("name", "write", "fmt"),
    [
        ("log.csv", write_csv, "csv"),
        ("log.jsonl", write_jsonl, "jsonl"),
        ("log.parquet", write_parquet, "parquet"),
    ],
)
def test_a_zip_of_one_log_file_is_read_as_the_file(tmp_path, name, write, fmt):
    path = _zip(write(tmp_path / name), "__MACOSX/._" + name)  # macOS's resource forks are no files of ours
    check_prepared(prepare_data(cfg(format="auto", path=str(path))))
    check_prepared(prepare_data(cfg(format=fmt, path=str(path))))
    bare = path.rename(tmp_path / "download.zip")  # named by the file inside
    check_prepared(prepare_data(cfg(format="auto", path=str(bare))))


def test_a_zip_of_several_files_says_to_unzip_it(tmp_path):
    path = _zip(write_csv(tmp_path / "log.csv"), "ml/u.item", "ml/README")
    for name in (path, shutil.copy(path, tmp_path / "ml-100k.zip")):
        with pytest.raises(
            DataError, match=r"zip archive holding 3 files \(log\.csv, ml/u\.item, ml/README\).*unzip"
        ):
            prepare_data(cfg(format="auto", path=str(name)))
    damaged = tmp_path / "log.csv.zip"
    damaged.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match=r"log\.csv\.zip: a zip file that cannot be read"):
        prepare_data(cfg(format="auto", path=str(damaged)))


@pytest.mark.parametrize(("name", "write"), [("log.parquet", write_parquet), ("log.jsonl", write_jsonl)])
def test_data_sep_for_a_format_without_a_separator_is_a_warning(tmp_path, caplog, monkeypatch, name, write):
    from metarec_dist.data import layout

    monkeypatch.setattr(layout, "_SEP_WARNED", set())
    path = write(tmp_path / name)
    with caplog.at_level(logging.WARNING):
        check_prepared(prepare_data(cfg(format="auto", path=str(path), sep=";")))
    assert f"data.sep=';' is ignored: {path}" in caplog.text and "csv and tsv files only" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        prepare_data(cfg(format="csv", path=str(write_csv(tmp_path / "log.csv", sep=";")), sep=";"))
        prepare_data(cfg(format="auto", path=str(path)))
    assert "data.sep" not in caplog.text


def test_user_item_lines_in_time_order(tmp_path):
    prepared = prepare_data(cfg(format="user_item", path=str(write_user_item(tmp_path / "seq.txt"))))
    check_prepared(prepared)


def test_ordered_rows_csv_without_timestamp(tmp_path):
    ordered = sorted(ROWS, key=lambda r: r[3])
    path = write_csv(tmp_path / "log.csv", rows=[r[:3] for r in ordered], header="user_id,item_id,rating")
    with pytest.raises(DataError, match="ordered_rows"):
        prepare_data(cfg(format="csv", path=str(path)))
    check_prepared(prepare_data(cfg(format="csv", path=str(path), ordered_rows=True)))


def test_string_ids_sort_as_text_and_keep_leading_zeros(tmp_path):
    rows = [("u07", "b", 1.0, 1), ("u07", "a10", 1.0, 2), ("007", "a9", 1.0, 3), ("007", "b", 1.0, 4)]
    path = write_csv(tmp_path / "log.csv", rows=rows)
    with pytest.raises(DataError, match="string_ids"):
        prepare_data(cfg(format="csv", path=str(path), test_frac=0.0))
    prepared = prepare_data(cfg(format="csv", path=str(path), string_ids=True, test_frac=0.0))
    assert prepared.users["raw_user"] == ["007", "u07"]
    assert prepared.item_raw_ids == ["a10", "a9", "b"]
    assert sequences_by_user(prepared) == [[2, 3], [3, 1]]


def test_integer_ids_sort_numerically(tmp_path):
    rows = [(1, 10, 1.0, 1), (1, 9, 1.0, 2), (2, 100, 1.0, 3), (2, 9, 1.0, 4)]
    path = write_csv(tmp_path / "log.csv", rows=rows)
    prepared = prepare_data(cfg(format="csv", path=str(path), test_frac=0.0))
    assert prepared.item_raw_ids == ["9", "10", "100"]
    assert sequences_by_user(prepared) == [[2, 1], [3, 1]]


def test_iso_dates_are_timestamps(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,date\n1,5,2020-01-02\n1,6,2020-01-01\n2,5,2019-12-31\n2,7,2020-03-01\n")
    prepared = prepare_data(cfg(format="csv", path=str(path), valid_frac=0.0, test_frac=0.4))
    assert sequences_by_user(prepared) == [[2, 1], [1, 3]]
    assert prepared.users["split"] == ["test", "train"]  # user 1 arrived last


def test_hub_dataset_through_load_dataset(monkeypatch):
    table = {
        "user_id": [r[0] for r in ROWS],
        "item_id": [r[1] for r in ROWS],
        "timestamp": [r[3] for r in ROWS],
    }
    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict(table)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    check_prepared(prepare_data(cfg(format="hub", name="someone/interactions")))
    assert calls == [("someone/interactions", None, "train")]


def test_hub_offline_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/interactions' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as info:
        prepare_data(cfg(format="hub", name="someone/interactions"))
    message = str(info.value)
    assert "someone/interactions" in message
    assert "network" in message
    assert "data.format=synthetic" in message
    assert isinstance(info.value, ValueError)


def test_load_interactions_is_the_normalised_log(tmp_path):
    log = load_interactions(cfg(format="auto", path=str(write_recbole(tmp_path / "ml"))))
    assert isinstance(log, datasets.Dataset)
    assert log.column_names == ["user", "item", "timestamp", "rating"]
    assert [tuple(r.values()) for r in log] == [(u, i, float(t), r) for u, i, r, t in ROWS]
    no_ratings = tmp_path / "log.csv"
    no_ratings.write_text("user_id,item_id,timestamp\n1,2,3\n")
    assert load_interactions(cfg(format="csv", path=str(no_ratings))).column_names == [
        "user",
        "item",
        "timestamp",
    ]
    assert load_interactions(cfg(format="synthetic")).num_rows > 0


def test_pandas_category_id_columns_in_parquet(tmp_path):
    """pandas saves a ``category`` column as a Parquet dictionary column: read as its values, ids as text
    with data.string_ids and, without it, an error that says so (not "has type dictionary<...>")."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = write_parquet(tmp_path / "log.parquet")
    table = pq.read_table(path)
    table = table.set_column(0, "user", pa.array([f"u{u}" for u in table.column("user").to_pylist()]))
    table = table.set_column(0, "user", table.column("user").dictionary_encode())
    pq.write_table(table, path)
    prepared = prepare_data(cfg(format="parquet", path=str(path), string_ids=True))
    assert prepared.users["raw_user"] == ["u1", "u2", "u3", "u4"]
    with pytest.raises(DataError, match=r"row 1, column 'user': 'u1' is not an integer user id"):
        prepare_data(cfg(format="parquet", path=str(path)))
