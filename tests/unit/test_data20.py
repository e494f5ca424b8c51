"""Session 20 (data20): ``data.encoding`` and a user pass of ``metarec data stats``.

A log in a ``data.encoding`` other than UTF-8 is transcoded a chunk at a time into a temporary UTF-8 copy
that Arrow reads from disk. Before, the whole file was read into memory, converted (a second copy) and
copied into Arrow's memory (a third): reading a 200 MB Latin-1 log peaked at 1.17-1.29 GB (4 runs) against
0.93-0.99 GB for its UTF-8 copy; now at 0.93-1.03 GB, as the UTF-8 copy. Results are those of the UTF-8
copy. data.encoding set where no text file is read is a warning; utf-16 without a byte order mark, or a
UTF-16 file read as Latin-1, one line."""

from __future__ import annotations

import gzip
import json
import logging

import numpy as np
import pytest
from data_fixtures import cfg, no_whole_file_reads, write_parquet, write_side_csv

from metarec_dist.data import DataError, prepare_data, textio
from metarec_dist.data.config import FeatureSpec

ROWS = [(f"usér{u}", f"itém{i}ü", 10 * u + i) for u in range(6) for i in range(5)]


def _csv(rows) -> str:
    return "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows)


def _jsonl(rows) -> str:
    keys = ("user_id", "item_id", "timestamp")
    return "".join(json.dumps(dict(zip(keys, row, strict=True)), ensure_ascii=False) + "\n" for row in rows)


def _prepared(path, **kwargs):
    settings = {"path": str(path), "string_ids": True, "valid_frac": 0.0, "test_frac": 0.0}
    prepared = prepare_data(cfg(**settings, **kwargs))
    return prepared.item_raw_ids, prepared.table().to_pylist()


@pytest.mark.parametrize(
    ("kind", "encoding", "write"),
    [
        ("csv", "latin-1", _csv),
        ("csv", "utf-16", _csv),
        ("csv", "cp1252", _csv),
        ("jsonl", "latin-1", _jsonl),
    ],
)
def test_a_log_in_another_encoding_streams_and_prepares_as_its_utf8_copy(
    tmp_path, monkeypatch, kind, encoding, write
):
    utf8 = tmp_path / f"utf8.{kind}"
    utf8.write_text(write(ROWS), encoding="utf-8")
    expected = _prepared(utf8, format=kind)
    other = tmp_path / f"other.{kind}"
    other.write_bytes(write(ROWS).encode(encoding))
    no_whole_file_reads(monkeypatch)
    assert _prepared(other, format=kind, encoding=encoding) == expected


def test_a_gzipped_latin1_log_streams_too(tmp_path, monkeypatch):
    utf8 = tmp_path / "utf8.csv"
    utf8.write_text(_csv(ROWS), encoding="utf-8")
    expected = _prepared(utf8, format="csv")
    packed = tmp_path / "log.csv.gz"
    packed.write_bytes(gzip.compress(_csv(ROWS).encode("latin-1")))
    monkeypatch.setattr(textio, "_CHUNK", 7)
    assert _prepared(packed, format="csv", encoding="latin-1") == expected


def test_a_byte_not_in_the_encoding_names_its_line_across_chunks(tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    data = _csv(ROWS).encode("cp1252") + b"u9,\x81,99\n"  # 0x81: no character in cp1252
    path.write_bytes(data)
    no_whole_file_reads(monkeypatch)
    line = len(ROWS) + 2
    with pytest.raises(DataError, match=rf"log\.csv: line {line}: not valid cp1252 \(byte 0x81\)"):
        _prepared(path, format="csv", encoding="cp1252")


def test_the_temporary_utf8_copy_is_removed(tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    path.write_bytes(_csv(ROWS).encode("latin-1"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(textio.tempfile, "tempdir", None)  # TMPDIR is read again
    _prepared(path, format="csv", encoding="latin-1")
    assert list((tmp_path / "tmp").iterdir()) == []


def test_data_encoding_with_no_text_file_to_read_is_one_warning(tmp_path, caplog, monkeypatch):
    """A Parquet log (UTF-8 by definition) with Parquet side tables, or synthetic data: data.encoding would
    be ignored without a word; it is a warning naming the key, once, as data.sep is."""
    from metarec_dist.data import layout

    monkeypatch.setattr(layout, "_SEP_WARNED", set())
    log_path = write_parquet(tmp_path / "log.parquet")
    with caplog.at_level(logging.WARNING):
        prepare_data(cfg(format="auto", path=str(log_path), encoding="latin-1"))
        prepare_data(cfg(format="auto", path=str(log_path), encoding="latin-1"))
        prepare_data(cfg(format="synthetic", encoding="latin-1"))
    warned = [r.getMessage() for r in caplog.records if "data.encoding" in r.getMessage()]
    assert len(warned) == 2, warned
    assert warned[0].startswith(
        f"data.encoding=latin-1 is ignored: no text file is read (the log is {log_path}"
    )
    assert "the synthetic data" in warned[1]
    caplog.clear()
    users, _ = write_side_csv(tmp_path / "side")  # a text side table: the key is used
    side = {"user_features_path": str(users), "user_features": [FeatureSpec(name="sex", kind="token")]}
    with caplog.at_level(logging.WARNING):
        prepare_data(cfg(format="auto", path=str(log_path), encoding="cp1252", **side))
        prepare_data(cfg(format="auto", path=str(log_path)))
    assert "data.encoding" not in caplog.text


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_utf16_given_for_a_file_without_its_byte_order_mark_is_one_line_naming_the_file(tmp_path, kind):
    """Was "UTF-16 stream does not start with BOM", naming no file and no key."""
    path = tmp_path / f"log.{kind}"
    path.write_text(_csv(ROWS) if kind == "csv" else _jsonl(ROWS), encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{path}: cannot be read as utf-16 .*set data\.encoding to") as err:
        _prepared(path, format=kind, encoding="utf-16")
    assert "utf-16-le" in str(err.value) and "\n" not in str(err.value)


def test_a_utf16_file_read_as_latin1_says_it_is_utf16(tmp_path):
    """Latin-1 reads any byte: the header came out as 'ÿþu s e r _ i d', "no user id column found"."""
    path = tmp_path / "log.csv"
    path.write_bytes(_csv(ROWS).encode("utf-16"))
    with pytest.raises(DataError, match=rf"^{path}: the file is UTF-16 .*--set data\.encoding=utf-16$"):
        _prepared(path, format="csv", encoding="latin-1")


def test_one_user_left_is_said_in_the_singular():
    """Was "only 1 users left after filtering"."""
    from metarec_dist.data.split import split_users

    with pytest.raises(DataError, match=r"^only 1 user left after filtering: data\.valid_frac=0\.1"):
        split_users(np.zeros(1), "time", 0.1, 0.1, 0)


def test_no_room_for_the_utf8_copy_is_one_line_naming_tmpdir(tmp_path, monkeypatch):
    """A full temporary folder was an OSError traceback."""
    path = tmp_path / "log.csv"
    path.write_bytes(_csv(ROWS).encode("latin-1"))
    real_fdopen = textio.os.fdopen

    class Full:
        def __init__(self, fd):
            self.file = real_fdopen(fd, "wb")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(textio.os, "fdopen", lambda fd, mode: Full(fd))
    with pytest.raises(DataError, match=rf"^{path}: cannot write its UTF-8 copy .*No space left .*TMPDIR"):
        _prepared(path, format="csv", encoding="latin-1")


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "utf-16"])
def test_a_file_with_no_text_once_decompressed_or_decoded_says_so(tmp_path, kind, encoding):
    """A gzip of an empty file (or a UTF-16 file of only its byte order mark): was "line 1 should be the
    header ... but is empty" / "cannot be read as JSON Lines: Empty JSON file"."""
    path = tmp_path / f"log.{kind}.gz"
    path.write_bytes(gzip.compress("".encode(encoding)))
    if kind == "csv":
        expected = rf"^{path}: no text once decompressed or decoded; check or re-create the file$"
    else:
        expected = rf"^{path}: no JSON records \(no text once decompressed or decoded\)$"
    with pytest.raises(DataError, match=expected):
        _prepared(path, format=kind, encoding=encoding)


def test_a_utf8_byte_order_mark_before_latin1_bytes_says_the_file_mixes_encodings(tmp_path, monkeypatch):
    """Excel's "CSV UTF-8" edited in a Latin-1 tool: with data.encoding=latin-1 (the advice for its é) the
    mark read as 'ï»¿user_id' and the error was "no user id column found"."""
    path = tmp_path / "log.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _csv(ROWS).encode("latin-1"))
    monkeypatch.setattr(textio, "_CHUNK", 7)  # the line is counted across chunks
    with pytest.raises(
        DataError, match=rf"^{path}: starts with a UTF-8 byte order mark but line 2 \(byte 0xe9\)"
    ):
        _prepared(path, format="csv", encoding="latin-1")
