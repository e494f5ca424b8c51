"""Session 21 (data21): the logs and titles files that were still read into memory whole now stream, and
the temporary copies of a killed run are removed by the next one.

``user_item`` logs, ``::``-separated logs (MovieLens-1M ``ratings.dat``), gzip'd or zipped logs and item
titles files were read whole into memory (then copied, then copied again into Arrow's memory). Now a gzip'd
log is decompressed by Arrow as it reads; a zipped one, a ``::`` one and a user_item one are written, a chunk
at a time, into one temporary UTF-8 copy Arrow can split (``::`` -> one character, runs of blanks -> one
space), as a non-UTF-8 log already was; titles are read a line at a time. Reading ~200 MB files with
readers.read_layout (peak RSS of 2 runs each / Arrow pool peak / Python heap peak by tracemalloc, MB):

    ratings.dat '::'  225 MB   1194, 1226 / 718 / 421  ->  874, 1067 / 527 /  46
    user_item         208 MB   1340, 1354 / 753 / 367  ->  951,  952 / 554 / 168 (136: the row-number times)
    log.csv.gz        201 MB*  1254, 1192 / 718 / 717  ->  937,  936 / 529 /  46
    log.csv.zip       201 MB*  1192, 1196 / 718 / 717  ->  930,  808 / 527 /  46
    movies.dat titles 250 MB   1449, 1514 /   0 /1331  ->  817,  817 /   1 / 665 (3.5M titles kept)
    (plain log.csv    201 MB    807,  810 / 527 /  46      871, 1003: the same code; RSS noise of the box)

* decompressed. The arrays read and the titles are the same (sha256 of them), before and after.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from data_fixtures import (
    EXPECTED,
    EXPECTED_SPLIT,
    ROWS,
    TITLES,
    cfg,
    gzipped,
    no_whole_file_reads,
    sequences_by_user,
    write_csv,
    write_parquet,
    write_ratings_csv,
    write_ratings_dat,
    write_recbole,
    write_u_data,
    write_user_item,
    zipped,
)

import metarec_dist
from metarec_dist.data import DataError, prepare_data, textio
from metarec_dist.data.textio import Utf8Text


def _check(prepared) -> None:
    assert sequences_by_user(prepared) == EXPECTED
    assert prepared.users["split"] == EXPECTED_SPLIT
    assert prepared.item_raw_ids == ["10", "20", "30", "40"]


def _utf16(path: Path) -> Path:
    target = path.with_name("utf16-" + path.name)
    target.write_bytes(path.read_text().encode("utf-16"))
    return target


@pytest.mark.parametrize(
    ("write", "name", "pack", "settings"),
    [
        (write_ratings_dat, "ml", None, {"format": "auto"}),
        (write_user_item, "seq.txt", None, {"format": "user_item"}),
        (write_user_item, "seq.txt", gzipped, {"format": "user_item"}),
        (write_user_item, "seq.txt", zipped, {"format": "user_item"}),
        (write_user_item, "seq.txt", _utf16, {"format": "user_item", "encoding": "utf-16"}),
        (write_csv, "log.csv", gzipped, {"format": "csv"}),
        (write_csv, "log.csv", zipped, {"format": "csv"}),
    ],
)
def test_logs_stream_and_prepare_as_before(tmp_path, monkeypatch, write, name, pack, settings):
    """Each of these went through textio.read_bytes (the whole file in memory)."""
    path = write(tmp_path / name)
    if pack is not None:
        path = pack(path)
    no_whole_file_reads(monkeypatch)
    _check(prepare_data(cfg(path=str(path), **settings)))


def test_a_separator_and_blanks_straddling_chunks_split_as_in_the_whole_file(tmp_path, monkeypatch):
    """Line-aligned pieces: a '::' or a run of blanks cut by a chunk boundary is rewritten as a whole."""
    path = tmp_path / "seq.txt"
    path.write_text(" 1 \t\t  10 \r\n2\f20\n\n1    30  ")  # lines end in CRLF, LF, none
    monkeypatch.setattr(textio, "_CHUNK", 3)
    text = Utf8Text(path, "utf-8", str(path), textio._squeeze_blanks)
    assert text.path.read_bytes() == b"1 10\r\n2 20\n\n1 30"
    sep = textio.TextFile(textio.TextSpec(path, "::", header=False, names=["a", "b"]))._rewrite()
    ratings = tmp_path / "ratings.dat"
    ratings.write_text("1::10:::5\n22::333::4")
    assert Utf8Text(ratings, "utf-8", "x", sep).path.read_bytes() == b"1\x1f10\x1f:5\n22\x1f333\x1f4"


def test_errors_in_a_rewritten_log_name_the_line(tmp_path, monkeypatch):
    path = write_ratings_dat(tmp_path / "ml", rows=[*ROWS, (5, "x", 1.0, 9)])
    monkeypatch.setattr(textio, "_CHUNK", 7)
    with pytest.raises(DataError, match=r"ratings\.dat: line 11, column 'item_id': 'x' is not an integer"):
        prepare_data(cfg(format="auto", path=str(path)))
    path.write_text("1::10::5::100\n2::20::5\n")
    with pytest.raises(
        DataError, match=r"ratings\.dat: line 2: 3 fields but 4 columns .*'timestamp' is missing"
    ):
        prepare_data(cfg(format="auto", path=str(path)))


@pytest.mark.parametrize("pack", [gzipped, zipped])
def test_an_archive_damaged_after_its_first_lines_is_one_line(tmp_path, pack):
    """Arrow decompresses the gzip'd log (an OSError of its own) and the zip is streamed: damage past the
    header is still the one-line error read_bytes gave when the whole file was read first."""
    rows = [(u, i, 1.0, u * 100 + i) for u in range(1, 400) for i in range(1, 40)]
    path = pack(write_csv(tmp_path / "log.csv", rows=rows))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    kind = "gzip file that cannot be decompressed" if pack is gzipped else "zip file that cannot be read"
    with pytest.raises(DataError, match=rf"^{path}: a {kind} \(.*\); check or re-create it$"):
        prepare_data(cfg(format="csv", path=str(path)))


@pytest.mark.parametrize(
    ("write", "encoding"),
    [(write_u_data, "utf-8"), (write_u_data, "latin-1"), (write_ratings_dat, "utf-8")],
)
def test_titles_stream(tmp_path, monkeypatch, write, encoding):
    """u.item and movies.dat (Latin-1, read as Latin-1 when data.encoding is left at UTF-8)."""
    path = write(tmp_path / "ml")
    no_whole_file_reads(monkeypatch)
    prepared = prepare_data(cfg(format="auto", path=str(path), encoding=encoding))
    expected = [TITLES[i] for i in (10, 20, 30, 40)]
    if write is write_u_data:
        expected[3] = "Quarante é (1998)"
    assert prepared.item_titles == dict(enumerate(expected, 1))


@pytest.mark.parametrize("write", [write_ratings_csv, write_recbole])
def test_csv_and_recbole_titles_stream(tmp_path, monkeypatch, write):
    """movies.csv (a quoted title with a comma) and RecBole's .item with CRLF line ends and a UTF-8 BOM."""
    path = write(tmp_path / "ml")
    meta = path.with_suffix(".item") if write is write_recbole else path.with_name("movies.csv")
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes().replace(b"\n", b"\r\n"))
    no_whole_file_reads(monkeypatch)
    titles = prepare_data(cfg(format="auto", path=str(path))).item_titles
    assert titles == {k: TITLES[i] for k, i in enumerate((10, 20, 30, 40), 1)}


_KEEP_A_COPY = """
import sys, tempfile, time
from pathlib import Path
tempfile.tempdir = sys.argv[1]
from metarec_dist.data.textio import Utf8Text
text = Utf8Text(Path(sys.argv[2]), "latin-1", "log")
print(text.path, flush=True)
time.sleep(120)
"""


def test_the_copy_of_a_killed_run_is_removed_by_the_next_run_and_nothing_else(tmp_path, monkeypatch):
    """A SIGKILL while a non-UTF-8 log was read left its UTF-8 copy in TMPDIR for good."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    log = tmp_path / "log.csv"
    log.write_bytes("user_id,item_id,timestamp\nusér,1,2\n".encode("latin-1"))
    env = {**os.environ, "PYTHONPATH": str(Path(metarec_dist.__file__).parents[1])}
    run = [sys.executable, "-c", _KEEP_A_COPY, str(temp), str(log)]
    reader = subprocess.Popen(run, stdout=subprocess.PIPE, text=True, env=env)
    try:
        copy = Path(reader.stdout.readline().strip())
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait()
        reader.stdout.close()
    assert copy.parent == temp and copy.read_bytes() == "user_id,item_id,timestamp\nusér,1,2\n".encode()
    # Kept: a live writer's copy (no lock: its pid is alive), a dead pid's copy someone holds the lock of (a
    # writer in another PID namespace sharing TMPDIR), and anything not named as ours.
    live = temp / f"metarec-utf8-{os.getppid()}-live.txt"
    held = temp / f"metarec-utf8-{reader.pid}-held.txt"
    others = [
        temp / name
        for name in (
            "metarec-utf8-k2j3h4.txt",
            "metarec-utf8-x-1.txt",
            f"metarec-utf8-{2**70}-a.txt",
            "notes.txt",
        )
    ]
    for path in (live, held, *others):
        path.write_text("x")
    with open(held, "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        monkeypatch.setattr(tempfile, "tempdir", str(temp))
        plain = Utf8Text(write_csv(tmp_path / "utf8.csv"), "utf-8", "utf8")  # a later read, with no copy
        assert plain.path == tmp_path / "utf8.csv"
        assert not copy.exists()
        assert all(path.exists() for path in (live, held, *others))
        later = Utf8Text(log, "latin-1", "log")  # and one of its own, removed as before
        own = later.path
        assert own.exists() and own.name.startswith(f"metarec-utf8-{os.getpid()}-")
        del later
    assert not own.exists()
    assert sorted(p.name for p in temp.iterdir()) == sorted(p.name for p in (live, held, *others))


def _zip_flags(path: Path, *, flags: int = 0, method: int | None = None) -> Path:
    """``path``'s zip with ``flags`` set and the compression ``method`` changed, in both of its headers."""
    data = bytearray(zipped(path).read_bytes())
    for magic, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.index(magic)
        data[at + flag_at] |= flags
        if method is not None:
            data[at + method_at : at + method_at + 2] = method.to_bytes(2, "little")
    target = path.with_name("odd.csv.zip")
    target.write_bytes(bytes(data))
    return target


def test_a_zip_python_cannot_open_is_one_line_saying_to_unzip_it(tmp_path):
    """An encrypted member was a RuntimeError traceback, a Deflate64 one (Windows' own zip of a large file) a
    NotImplementedError traceback."""
    path = write_csv(tmp_path / "log.csv")
    encrypted = _zip_flags(path, flags=1)
    with pytest.raises(
        DataError, match=rf"^{encrypted}: log\.csv in it is encrypted .*unzip it .*data\.path"
    ):
        prepare_data(cfg(format="auto", path=str(encrypted)))
    deflate64 = _zip_flags(path, method=9)
    with pytest.raises(DataError, match=rf"^{deflate64}: log\.csv in it is compressed with a method Python"):
        prepare_data(cfg(format="auto", path=str(deflate64)))


def test_an_empty_zip_says_so(tmp_path):
    """Its first bytes are the archive's end record, not a file's: it was read as a csv ("no user id column
    found ... the columns are: PK")."""
    path = tmp_path / "log.csv.zip"
    zipfile.ZipFile(path, "w").close()
    with pytest.raises(DataError, match=rf"^{path}: an empty zip archive \(no file in it\)"):
        prepare_data(cfg(format="auto", path=str(path)))


def test_a_movies_csv_the_csv_module_rejects_is_a_warning_not_a_traceback(tmp_path, caplog):
    """Titles are a convenience: a bare carriage return inside a field was a _csv.Error traceback."""
    path = write_ratings_csv(tmp_path / "ml")
    path.with_name("movies.csv").write_bytes(b"movieId,title,genres\n10,Ten\r(1995),Drama\n")
    with caplog.at_level("WARNING"):
        prepared = prepare_data(cfg(format="auto", path=str(path)))
    _check(prepared)
    assert prepared.item_titles is None
    assert "movies.csv not used: new-line character seen in unquoted field" in caplog.text


def test_a_csv_with_classic_mac_line_ends_reads_as_its_unix_twin(tmp_path):
    """Lines ended by a carriage return alone (Excel's "CSV (Macintosh)"): Arrow split rows there, the header
    scan did not, and csv.reader raised _csv.Error ("new-line character seen in unquoted field") as a
    traceback; now the lines are ended as Arrow ends them, and a bad value names its line."""
    unix = write_csv(tmp_path / "unix.csv")
    mac = tmp_path / "mac.csv"
    mac.write_bytes(unix.read_bytes().replace(b"\n", b"\r"))
    expected = prepare_data(cfg(format="csv", path=str(unix)))
    _check(prepare_data(cfg(format="csv", path=str(mac))))
    assert prepare_data(cfg(format="csv", path=str(mac))).users.to_list() == expected.users.to_list()
    bad = tmp_path / "bad.csv"
    bad.write_bytes(
        write_csv(tmp_path / "b.csv", rows=[*ROWS, (5, "x", 1.0, 9)]).read_bytes().replace(b"\n", b"\r")
    )
    with pytest.raises(DataError, match=rf"^{bad}: line 12, column 'item_id': 'x' is not an integer"):
        prepare_data(cfg(format="csv", path=str(bad)))


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_carriage_returns_end_lines_across_chunks_but_not_inside_crlf(tmp_path, monkeypatch, chunk):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"a\rbb\r\nc\r\rd")
    monkeypatch.setattr(textio, "_CHUNK", chunk)
    assert Utf8Text(path, "utf-8", "x", cr_line_ends=True).path.read_bytes() == b"a\nbb\r\nc\n\nd"
    pieces = list(textio._utf8_pieces(path, None, "x", cr_line_ends=True))
    assert all(p.endswith((b"\r", b"\n")) for p in pieces[:-1]) and b"".join(pieces) == path.read_bytes()
    assert not any(p.endswith(b"\r") and q.startswith(b"\n") for p, q in itertools.pairwise(pieces))


def test_a_headerless_log_with_classic_mac_line_ends_reads_as_before(tmp_path, monkeypatch):
    """Arrow read these before (no header to scan): the same sequences now."""
    path = write_ratings_dat(tmp_path / "ml")
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    monkeypatch.setattr(textio, "_CHUNK", 5)
    _check(prepare_data(cfg(format="auto", path=str(path))))


def test_a_workbook_or_a_parquet_file_read_as_text_says_what_it_is(tmp_path):
    """An .xlsx was "a zip archive holding 5 files ... unzip it"; an .xls or a Parquet file read as csv was
    "not valid UTF-8 (byte 0xd0); set data.encoding ..." (and with data.encoding=latin-1 garbage names)."""
    xlsx = tmp_path / "log.xlsx"
    with zipfile.ZipFile(xlsx, "w") as book:
        for name in ("[Content_Types].xml", "_rels/.rels", "xl/workbook.xml", "xl/worksheets/sheet1.xml"):
            book.writestr(name, "<x/>")
    xls = tmp_path / "log.xls"
    xls.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600))
    parquet = tmp_path / "parquet.csv"
    write_parquet(parquet)
    save_as = r"not a text file: save the sheet as CSV \(Excel: File > Save As > CSV UTF-8\)"
    for path, said in (
        (xlsx, rf"an Excel workbook \(\.xlsx\), {save_as}"),
        (xls, rf"an Excel 97-2003 workbook \(\.xls\), {save_as}"),
        (parquet, r"a Parquet file, not a text file: --set data\.format=parquet$"),
    ):
        for encoding in ("utf-8", "latin-1"):
            with pytest.raises(DataError, match=rf"^{path}: {said}"):
                prepare_data(cfg(format="csv", path=str(path), encoding=encoding))


def test_a_data_path_with_the_default_synthetic_format_is_a_warning(tmp_path, caplog, monkeypatch):
    """``--set data.path=log.csv`` alone trained on generated data, said only by "data: synthetic (...)"."""
    from metarec_dist.data import layout

    monkeypatch.setattr(layout, "_SEP_WARNED", set())
    path = write_csv(tmp_path / "log.csv")
    with caplog.at_level("WARNING"):
        prepared = prepare_data(cfg(path=str(path), synthetic_users=20))
    assert prepared.source.startswith("synthetic")
    assert (
        f"data.path={str(path)!r} is ignored: data.format is synthetic (the default), so generated data is "
        "read, not the file; set data.format=auto" in caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING"):
        prepare_data(cfg(synthetic_users=20))
        _check(prepare_data(cfg(format="auto", path=str(path))))
    assert "is ignored" not in caplog.text


@pytest.mark.parametrize(
    ("kind", "magic"),
    [
        ("bzip2", b"BZh91AY&SY"),
        ("xz", b"\xfd7zXZ\x00\x00"),
        ("zstd", b"\x28\xb5\x2f\xfd\x00"),
        ("7-Zip", b"7z\xbc\xaf\x27\x1c"),
    ],
)
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_log_compressed_other_than_gzip_or_zip_says_so(tmp_path, kind, magic, fmt):
    """Was "line 1 (the header): not valid UTF-8 (byte 0x..); set data.encoding ..." (jsonl: "line 1: not
    valid UTF-8")."""
    path = tmp_path / f"log.{fmt}"
    path.write_bytes(magic + bytes(range(256)))
    with pytest.raises(DataError, match=rf"^{path}: compressed with {kind}, which is not read .*gzip"):
        prepare_data(cfg(format=fmt, path=str(path)))
    starts_alike = write_csv(tmp_path / "x.csv", header=magic[:3].decode("latin-1") + "x,item_id,timestamp")
    with pytest.raises(DataError, match=r"no user id column found"):  # text that starts alike is read as text
        prepare_data(cfg(format="csv", path=str(starts_alike), encoding="latin-1"))
