"""A gzip'd or zipped Parquet log is decompressed to a temporary file, a chunk at a time, and Arrow reads
that by path: it was read whole into memory, then copied into Arrow's (a 216 MB Parquet file gzip'd, of
which the log's three columns are read: 489 MB peak, zipped 610 MB; now 187 MB, as for the plain file)."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from data_fixtures import EXPECTED, cfg, gzipped, sequences_by_user, write_parquet, zipped

from metarec_dist.data import prepare_data
from metarec_dist.data.errors import DataError
from metarec_dist.data.textio import arrow_source


@pytest.fixture
def temp(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize("pack", [gzipped, zipped])
def test_a_packed_parquet_file_is_read_by_path_from_a_temporary_copy_removed_after(tmp_path, temp, pack):
    plain = write_parquet(tmp_path / "log.parquet")
    with arrow_source(pack(plain)) as source:
        copy = Path(source)
        assert copy.parent == temp and re.fullmatch(rf"metarec-parquet-{os.getpid()}-\w+\.parquet", copy.name)
        assert copy.read_bytes() == plain.read_bytes()
    assert not copy.exists()
    with arrow_source(plain) as source:  # a plain file is read where it is
        assert source == str(plain)
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize("pack", [gzipped, zipped])
def test_a_packed_parquet_log_prepares_as_the_plain_one_and_leaves_no_copy(tmp_path, temp, pack):
    path = pack(write_parquet(tmp_path / "log.parquet"))
    prepared = prepare_data(cfg(path=str(path), format="parquet", time_col="ts"))
    assert sequences_by_user(prepared) == EXPECTED
    assert list(temp.iterdir()) == []


def test_the_copy_a_killed_run_left_is_removed_by_the_next_and_a_live_ones_kept(tmp_path, temp):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = temp / f"metarec-parquet-{int(dead.stdout)}-abc.parquet"
    live = temp / f"metarec-parquet-{os.getppid()}-abc.parquet"
    for path in (stale, live):
        path.write_bytes(b"PAR1")
    with arrow_source(gzipped(write_parquet(tmp_path / "log.parquet"))):
        pass
    assert not stale.exists() and live.exists()


def test_no_room_for_the_copy_is_one_line_naming_tmpdir(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-tmp"
    monkeypatch.setattr(tempfile, "tempdir", str(missing))
    packed = gzipped(write_parquet(tmp_path / "log.parquet"))
    with pytest.raises(DataError) as err, arrow_source(packed):
        pass
    msg = str(err.value)
    assert msg.startswith(f"{packed}: cannot write its decompressed copy") and str(missing) in msg
    assert "TMPDIR" in msg and "\n" not in msg


def test_a_damaged_gzip_parquet_file_is_one_line_and_leaves_no_copy(tmp_path, temp):
    packed = gzipped(write_parquet(tmp_path / "log.parquet"))
    packed.write_bytes(packed.read_bytes()[:-12])  # cut: the end of the stream is missing
    with pytest.raises(DataError, match="a gzip file that cannot be decompressed"), arrow_source(packed):
        pass
    assert list(temp.iterdir()) == []


# An unterminated quote in a CSV log: Arrow reads the rest of the file as the quoted value, and the line scan
# named the quote's line as "2 fields but 3 columns ... column 'timestamp' is missing", the wrong cause.
HEADER = "user_id,item_id,timestamp\n1,10,100\n"


def _csv_error(tmp_path: Path, body: str) -> str:
    path = tmp_path / "log.csv"
    path.write_text(HEADER + body)
    with pytest.raises(DataError) as err:
        prepare_data(cfg(path=str(path), format="csv"))
    return str(err.value).removeprefix(f"{path}: ")


def test_an_unterminated_quote_is_named_at_the_line_it_opens(tmp_path):
    msg = _csv_error(tmp_path, '2,"20,50\n3,30,200\n4,40,300\n')
    assert msg.startswith(
        "line 3: the quote (\") that opens column 'item_id' is never closed: the rest of the"
    )
    assert "missing" not in msg and "\n" not in msg


def test_a_quote_closed_lines_later_names_both_lines_and_the_row_it_made(tmp_path):
    msg = _csv_error(tmp_path, '2,"20\n3"\n4,40,300\n')
    assert msg.startswith("line 3: the quote (\") that opens column 'item_id' is closed only on line 4: the ")
    assert "one row of 2 fields (3 columns)" in msg


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ('2,"2\n0",50\n3,30\n', 5),  # a quoted value holding a line break is a value (Arrow reads it)
        ('2,"20""x",50\n3,30\n', 4),  # "" in a quoted value is a quote
        ('2,2"0,50\n3,30\n', 4),  # a quote inside a value opens nothing
    ],
)
def test_quoted_values_that_are_fine_are_not_blamed_for_a_later_short_line(tmp_path, body, line):
    msg = _csv_error(tmp_path, body)
    assert msg.startswith(f"line {line}: 2 fields but 3 columns (user_id, item_id, timestamp)")


@pytest.mark.parametrize("pack", [gzipped, zipped])
def test_packed_parquet_side_tables_give_the_plain_ones_and_leave_no_copy(tmp_path, temp, pack):
    from test_data_features import _same_tables_from, _tables

    plain = _same_tables_from("parquet", tmp_path)
    packed = dataclasses.replace(
        plain,
        user_features_path=str(pack(Path(plain.user_features_path))),
        item_features_path=str(pack(Path(plain.item_features_path))),
    )
    assert _tables(prepare_data(packed).features) == _tables(prepare_data(plain).features)
    assert list(temp.iterdir()) == []
