"""Session 20: ``data.encoding``: text files that are not UTF-8 (MovieLens' u.item is Latin-1) are read in
the encoding given, by every text reader (the log, the side tables, JSON Lines, item titles). Before, a
Latin-1 side table or log was an error advising to re-save it with iconv. The key enters the data cache
key only when not UTF-8 (entries written before it stay valid); an unknown encoding is one line naming it."""

from __future__ import annotations

import json

import pytest
from data_fixtures import cfg, write_recbole, write_u_data

from metarec_dist.checkpoint import config_changes
from metarec_dist.config import Config, load_config
from metarec_dist.data import DataError, prepare_data
from metarec_dist.data.cache import cache_key
from metarec_dist.data.config import FeatureSpec

ML_ITEM_COLUMNS = ["item_id", "title", "release_date", "video_release_date", "url", "a", "b"]
TITLE = [FeatureSpec(name="title", kind="title")]


def _u_item(folder, **kwargs):
    items = {"item_features_path": str(folder / "u.item"), "item_features_sep": "|"}
    items["item_features_columns"] = ML_ITEM_COLUMNS
    return cfg(format="movielens", path=str(folder), item_features=TITLE, **items, **kwargs)


def test_a_latin1_side_table_and_its_titles_read_with_data_encoding(tmp_path):
    folder = tmp_path / "ml-100k"
    write_u_data(folder)  # u.data and a Latin-1 u.item: "Quarante é (1998)" for item 40
    with pytest.raises(DataError, match=r"not valid UTF-8 .*--set data\.encoding=latin-1"):
        prepare_data(_u_item(folder))  # the advice was iconv
    prepared = prepare_data(_u_item(folder, encoding="latin-1"))
    titles = list(prepared.features.item["title"].values)
    assert "Quarante é (1998)" in titles
    assert "Quarante é (1998)" in prepared.item_titles.values()  # u.item's titles, read in Latin-1 too


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_latin1_log_reads_with_data_encoding(tmp_path, kind):
    rows = [("ü1", "é1", 1), ("ü1", "é2", 2), ("ü2", "é1", 3), ("ü2", "é2", 4)]
    path = tmp_path / f"log.{kind}"
    if kind == "csv":
        text = "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows)
    else:
        text = "".join(
            json.dumps({"user_id": u, "item_id": i, "timestamp": t}, ensure_ascii=False) + "\n"
            for u, i, t in rows
        )
    path.write_bytes(text.encode("latin-1"))
    settings = {"format": kind, "path": str(path), "string_ids": True, "valid_frac": 0.0, "test_frac": 0.0}
    with pytest.raises(DataError, match=r"not valid UTF-8 .*data\.encoding=latin-1"):
        prepare_data(cfg(**settings))
    prepared = prepare_data(cfg(**settings, encoding="latin-1"))
    assert sorted(prepared.item_raw_ids) == ["é1", "é2"]


def test_bytes_not_in_the_encoding_given_name_the_line_and_key(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes("user_id,item_id,timestamp\n1,10,1\n1,\xe9,2\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"log\.csv: line 3: not valid ascii .*data\.encoding=ascii"):
        prepare_data(cfg(format="csv", path=str(path), string_ids=True, encoding="ascii"))


def test_an_unknown_encoding_is_one_line_naming_the_key():
    for name in ("latin-9x", "base64"):  # base64: a codec, but not of text
        with pytest.raises(ValueError, match=r"^data\.encoding: unknown text encoding") as err:
            load_config(None, [f"data.encoding={name}"])
        assert "\n" not in str(err.value)


def test_the_cache_key_holds_the_encoding_only_when_not_utf8(tmp_path, monkeypatch):
    folder = tmp_path / "ml-100k"
    files = [write_u_data(folder)]
    hashed = []
    real_dumps = json.dumps
    monkeypatch.setattr(json, "dumps", lambda obj, **kw: hashed.append(obj) or real_dumps(obj, **kw))
    utf8 = cache_key(files, cfg(format="movielens", path=str(folder)))
    assert "encoding" not in hashed[-1]["settings"] and "kcore" in hashed[-1]["settings"]
    assert cache_key(files, cfg(format="movielens", path=str(folder), encoding="UTF8")) == utf8
    latin1 = cache_key(files, cfg(format="movielens", path=str(folder), encoding="latin-1"))
    assert latin1 != utf8
    assert cache_key(files, cfg(format="movielens", path=str(folder), encoding="iso-8859-1")) == latin1


def test_a_checkpoint_from_before_the_key_resumes_without_a_change():
    new, old = Config().to_dict(), Config().to_dict()
    del old["data"]["encoding"]  # what a checkpoint from before data.encoding holds
    assert config_changes(old, new) == {}
    new["data"]["encoding"] = "latin-1"
    assert config_changes(old, new) == {"data.encoding": ("utf-8", "latin-1")}


def test_a_latin1_side_table_beside_utf8_files_reads_each_right(tmp_path):
    """data.encoding=latin-1 for a Latin-1 item table next to a UTF-8 log whose RecBole .item (titles) is
    UTF-8: Latin-1 reads any byte, so the UTF-8 titles would come out garbled ('Ã©'); a file that is valid
    UTF-8 is read as UTF-8."""
    log = write_recbole(tmp_path / "ml")
    item = tmp_path / "ml" / "ml.item"
    item.write_text(item.read_text(encoding="utf-8").replace("Forty", "Quarante é"), encoding="utf-8")
    side = tmp_path / "items.csv"
    side.write_bytes("item_id,name\n10,Dix\n40,Quarante é\n".encode("latin-1"))
    settings = {"item_features_path": str(side), "item_features": [FeatureSpec(name="name", kind="title")]}
    prepared = prepare_data(cfg(format="recbole", path=str(log), encoding="latin-1", **settings))
    assert "Quarante é" in list(prepared.features.item["name"].values)
    assert "Quarante é (1998)" in prepared.item_titles.values()  # before this rule: 'Quarante Ã© (1998)'


def test_a_utf16_log_reads_with_data_encoding(tmp_path):
    """UTF-16 writes ASCII as two bytes: every file is read in it, valid UTF-8 or not."""
    path = tmp_path / "log.csv"
    path.write_bytes("user_id,item_id,timestamp\n1,10,1\n1,20,2\n2,10,3\n2,20,4\n".encode("utf-16"))
    prepared = prepare_data(
        cfg(format="csv", path=str(path), encoding="utf-16", valid_frac=0.0, test_frac=0.0)
    )
    assert sorted(prepared.item_raw_ids) == ["10", "20"]
