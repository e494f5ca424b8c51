"""Session 19: side tables' own separator and header-less column names (``data.<entity>_features_sep``,
``data.<entity>_features_columns``): a '|'-separated item table next to a ';'-separated log, and
MovieLens' own u.user / u.item ('|'-separated, no header line, u.item in Latin-1). Before, a side table
was split at data.sep (or its extension's separator) and needed a header line: neither could be read."""

from __future__ import annotations

import pytest
from data_fixtures import ITEM_ROWS, USER_ROWS, cfg, write_side_parquet, write_u_data

from metarec_dist.config import load_config
from metarec_dist.data import DataError, prepare_data
from metarec_dist.data.config import FeatureSpec
from metarec_dist.errors import UserError

GENRES = FeatureSpec(name="genres", kind="token_seq", sep=",")
YEAR = FeatureSpec(name="year", kind="token")


def _semicolon_log(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id;item_id;timestamp\n" + "".join(f"{u};{i};{t}\n" for u, i, t in _rows()))
    return path


def _rows():
    return [(1, 10, 1), (1, 20, 2), (2, 20, 3), (2, 30, 4), (3, 10, 5), (3, 50, 6), (4, 30, 7), (4, 10, 8)]


def _pipe_items(tmp_path, header: bool = True):
    path = tmp_path / "items.csv"
    lines = ["item_id|year|genres\n"] if header else []
    lines += [f"{i}|{y}|{','.join(c)}\n" for i, _, y, c in ITEM_ROWS]
    path.write_text("".join(lines))
    return path


def _config(log, items, **kwargs):
    return cfg(
        format="csv",
        path=str(log),
        sep=";",
        item_features_path=str(items),
        item_features=[YEAR, GENRES],
        **kwargs,
    )


def test_a_pipe_separated_item_table_next_to_a_semicolon_log(tmp_path):
    log, items = _semicolon_log(tmp_path), _pipe_items(tmp_path)
    with pytest.raises(DataError, match=r"looks '\|'-separated: --set \"data\.item_features_sep='\|'\""):
        prepare_data(_config(log, items))  # before the key: no way to read it
    features = prepare_data(_config(log, items, item_features_sep="|")).features.item
    assert features["year"].vocab[2:] == ["1990", "1995", "1997"]
    assert sorted(features["genres"].vocab[2:]) == ["Comedy", "Drama", "Horror"]


def test_a_wrong_side_table_separator_is_named(tmp_path):
    log, items = _semicolon_log(tmp_path), _pipe_items(tmp_path)
    with pytest.raises(DataError) as err:
        prepare_data(_config(log, items, item_features_sep="::"))
    message = str(err.value)
    assert "items.csv" in message and "data.item_features_sep" in message and "'|'" in message
    items.write_text("item_id year genres\n10 1995 a\n")  # no separator the hint knows
    with pytest.raises(
        DataError, match=r"one column 'item_id year genres' when split at data\.item_features_sep='\|'"
    ):
        prepare_data(_config(log, items, item_features_sep="|"))


def test_side_table_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"data\.user_features_sep must be a non-empty separator"):
        cfg(format="synthetic", user_features_sep="")
    with pytest.raises(ValueError, match=r"data\.item_features_columns: 'a' named twice"):
        cfg(format="synthetic", item_features_columns=["a", "b", "a"])
    with pytest.raises(UserError, match=r"data\.item_features_sep"):
        load_config(None, ["data.item_features_sep=''", "logging.wandb=off"])
    user, _ = write_side_parquet(tmp_path)
    log = _semicolon_log(tmp_path)
    age = FeatureSpec(name="age", kind="float")
    config = cfg(
        format="csv",
        path=str(log),
        sep=";",
        user_features_path=str(user),
        user_features=[age],
        user_features_sep="|",
    )
    with pytest.raises(
        DataError, match=r"data\.user_features_sep: .*users\.parquet is a Parquet file.*drop it"
    ):
        prepare_data(config)


def test_a_table_without_header_line_is_read_with_its_column_names(tmp_path):
    log, items = _semicolon_log(tmp_path), _pipe_items(tmp_path, header=False)
    columns = ["item_id", "year", "genres"]
    features = prepare_data(
        _config(log, items, item_features_sep="|", item_features_columns=columns)
    ).features
    assert features.item["year"].vocab[2:] == ["1990", "1995", "1997"]
    with pytest.raises(DataError, match=r"line 1 has 3 fields but data\.item_features_columns names 2"):
        prepare_data(_config(log, items, item_features_sep="|", item_features_columns=columns[:2]))
    with pytest.raises(DataError, match=r"line 1 is one field when split at data\.item_features_sep=';'"):
        prepare_data(_config(log, items, item_features_sep=";", item_features_columns=columns))


def test_movielens_own_side_files(tmp_path):
    """u.user and u.item as GroupLens ships them: '|'-separated, no header, u.item in Latin-1."""
    folder = tmp_path / "ml-100k"
    write_u_data(folder)  # u.data and a Latin-1 u.item (id|title|date||url|two genre flags)
    (folder / "u.user").write_text("".join(f"{u}|{a}|{g or 'M'}|{o}|00000\n" for u, a, g, o in USER_ROWS))
    users = {
        "user_features_path": str(folder / "u.user"),
        "user_features_sep": "|",
        "user_features_columns": ["user_id", "age", "gender", "occupation", "zip_code"],
        "user_features": [
            FeatureSpec(name="age", kind="float"),
            FeatureSpec(name="occupation", kind="token"),
        ],
    }
    config = cfg(format="movielens", path=str(folder), **users)
    with pytest.raises(DataError, match=r"looks '\|'-separated: --set \"data\.user_features_sep='\|'\""):
        prepare_data(
            cfg(
                format="movielens",
                path=str(folder),
                user_features=users["user_features"],
                user_features_path=users["user_features_path"],
            )
        )
    assert prepare_data(config).features.user["occupation"].vocab[2:] == ["other", "technician"]
    items = {
        "item_features_path": str(folder / "u.item"),
        "item_features_sep": "|",
        "item_features_columns": ["item_id", "title", "release_date", "video_release_date", "url", "a", "b"],
    }
    flags = cfg(
        format="movielens", path=str(folder), item_features=[FeatureSpec(name="b", kind="token")], **items
    )
    assert prepare_data(flags).features.item["b"].vocab[2:] == ["1"]
    titles = cfg(
        format="movielens", path=str(folder), item_features=[FeatureSpec(name="title", kind="title")], **items
    )
    with pytest.raises(DataError, match=r"not valid UTF-8 .*--set data\.encoding=latin-1"):
        prepare_data(titles)


def test_a_pipe_separated_log_hint_survives_the_shell_and_yaml(tmp_path):
    """`--set data.sep='|'` reaches the config as a bare |, which YAML reads as empty block text."""
    log = tmp_path / "log.csv"
    log.write_text("user_id|item_id|timestamp\n1|10|1\n1|20|2\n")
    with pytest.raises(DataError, match=r"looks '\|'-separated: --set \"data\.sep='\|'\""):
        prepare_data(cfg(format="csv", path=str(log)))
    with pytest.raises(UserError, match=r"data\.sep must be a non-empty separator"):
        load_config(None, ["data.sep=|", "logging.wandb=off"])  # what the old hint gave after the shell
    assert load_config(None, ["data.sep='|'", "logging.wandb=off"]).data.sep == "|"


def test_a_separator_for_a_table_nothing_reads_is_said(tmp_path, caplog):
    log = _semicolon_log(tmp_path)
    prepare_data(cfg(format="csv", path=str(log), sep=";", item_features_sep="|"))
    assert "data.item_features_sep is set but data.item_features declares no feature" in caplog.text


def test_a_separator_for_a_json_lines_table_is_refused(tmp_path):
    log, items = _semicolon_log(tmp_path), tmp_path / "items.jsonl"
    items.write_text('{"item_id": 10, "year": "1995"}\n')
    config = cfg(format="csv", path=str(log), sep=";", item_features_path=str(items), item_features=[YEAR])
    with pytest.raises(DataError, match=r"data\.item_features_columns: .*items\.jsonl is a JSON Lines file"):
        prepare_data(cfg(**{**config.__dict__, "item_features_columns": ["item_id", "year"]}))
