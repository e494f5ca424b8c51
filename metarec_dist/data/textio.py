"""Delimited text files (CSV, TSV, ``::``-separated, whitespace-separated) read with pyarrow.

Why pyarrow and not ``load_dataset("csv")``: it is multi-threaded, reads only the columns asked for,
and does not copy the log into the Hugging Face cache; the prepared result is what gets cached.
Parse problems (wrong field count, bad UTF-8) are then located by a line-by-line scan, which only
runs once the fast reader has failed, so the good path pays nothing for precise messages.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import os
import re
import tempfile
import weakref
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

from metarec_dist.data.columns import Where
from metarec_dist.data.config import is_utf8
from metarec_dist.data.errors import DataError

_UNIT_SEP = "\x1f"  # stands in for a multi-character separator such as MovieLens-1M's "::"
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a file; an empty archive (its end record only)
_OTHER_SEPARATORS = ("\t", "::", ";", "|", ",")  # what a one-column header is most likely split by
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass
class TextSpec:
    path: Path
    sep: str = ","
    header: bool = True
    names: list[str] = field(default_factory=list)  # column names when there is no header
    quoting: bool = True  # CSV-style "quoted, fields"; off for TSV and fixed layouts
    whitespace: bool = False  # fields separated by runs of spaces/tabs (the user_item format)
    side: str | None = (
        None  # a side table's entity ("user", "item"): hints name its data.<side>_features_* keys
    )
    encoding: str = "utf-8"  # data.encoding: another one is transcoded to UTF-8 when read


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # what Excel's "Unicode text" and PowerShell write


def reencode_hint(first_line: bytes) -> str:
    """What to do about a file that is not UTF-8 (``data.encoding``); a UTF-16 one (every other byte 0, so
    not one field would read right) is named as such."""
    if first_line.startswith(_UTF16_BOMS):
        return "the file is UTF-16 (it starts with a UTF-16 byte order mark): --set data.encoding=utf-16"
    return ENCODING_HINT


ENCODING_HINT = (
    "set data.encoding to the file's encoding, e.g. --set data.encoding=latin-1 (as MovieLens' u.item), "
    "or re-save the file as UTF-8"
)


def _no_bom(exc: UnicodeError, encoding: str, label: str) -> DataError:
    return DataError(
        f"{label}: cannot be read as {encoding} ({exc}); set data.encoding to the encoding the file is "
        f"written in (one without a byte order mark that is {encoding}: name the byte order, e.g. "
        f"{encoding.lower()}-le)"
    )


def _not_in_encoding(exc: UnicodeDecodeError, encoding: str, label: str, first_line: int) -> DataError:
    """Bytes that are not ``encoding``: a DataError naming the line (``exc.object`` starts at
    ``first_line``) and the key."""
    line = first_line + exc.object[: exc.start].decode(encoding, "replace").count("\n")
    return DataError(
        f"{label}: line {line}: not valid {encoding} (byte 0x{exc.object[exc.start]:02x}); data.encoding="
        f"{encoding} is not this file's encoding: set data.encoding to the one it is written in"
    )


def _ascii_compatible(encoding: str) -> bool:
    return "id,1\n".encode(encoding) == b"id,1\n"


_CHUNK = 1 << 20  # bytes decoded at a time when a file is transcoded
_COPY_PREFIX = "metarec-utf8-"  # + the writer's pid + "-": how a later run tells a stale copy of ours
_PARQUET_PREFIX = "metarec-parquet-"  # a gzip'd or zipped Parquet file's decompressed copy (arrow_source)
_COPY_NAME = re.compile(r"metarec-(?:utf8-(\d+)-\w+\.txt|parquet-(\d+)-\w+\.parquet)")


class Utf8Text:
    """A text file in ``encoding`` (``data.encoding``) as a UTF-8 file the readers take: the file itself
    when it is UTF-8 (or, for an encoding that writes ASCII as ASCII, valid UTF-8: a Latin-1 side table beside
    a UTF-8 log and its UTF-8 titles: Latin-1 would read every byte, silently garbling the UTF-8 ones), else a
    temporary UTF-8 copy written a chunk at a time (memory stays bounded whatever the file's size),
    deleted when this object is. ``rewrite`` (bytes of whole lines -> bytes) turns the text into what
    Arrow can split (a multi-character separator, runs of blanks): it is applied while copying. A zip
    archive's file is copied too (Arrow cannot read zip); a gzip'd one that needs no copy is decompressed
    by Arrow (``source``). Keep this object alive while ``path`` is read."""

    def __init__(
        self,
        path: Path,
        encoding: str,
        label: str,
        rewrite: Callable[[bytes], bytes] | None = None,
        cr_line_ends: bool = False,
    ) -> None:
        _remove_stale_copies()  # at every text read, whether or not this one needs a copy
        self.path = path
        decode: str | None = encoding
        if is_utf8(encoding):
            decode = None
        elif _ascii_compatible(encoding):
            not_utf8 = not_utf8_at(path)
            if not_utf8 is None:
                decode = None
            else:
                _check_bom(path, encoding, label, not_utf8)
        if cr_line_ends:  # lines ended by "\r" alone: "\n" in the copy, then rewritten as any other
            rewrite = _after_cr_to_lf(rewrite)
        if decode is None and rewrite is None and not is_zip(path):
            return
        fd, self.path = _utf8_copy(path, decode, label, rewrite, cr_line_ends)
        weakref.finalize(self, _remove, self.path, fd)

    def source(self) -> str | pa.NativeFile:
        """What Arrow's CSV and JSON readers read: the path, or a gzip'd file decompressed as it is read."""
        if is_gzip(self.path):
            return pa.CompressedInputStream(pa.OSFile(str(self.path)), "gzip")
        return str(self.path)

    def lines(self) -> Iterator[bytes]:
        """The text's lines (UTF-8 bytes, line ends kept), read a buffer at a time."""
        return lines_of(self.path)

    def check_archive(self) -> None:
        """Error path, before the lines are scanned: a damaged gzip file is a DataError (decompressed
        without its checksum, the damage reads as lines of garbage)."""
        if is_gzip(self.path):
            deque(_chunks(self.path), maxlen=0)


def _after_cr_to_lf(rewrite: Callable[[bytes], bytes] | None) -> Callable[[bytes], bytes]:
    def cr_to_lf(lines: bytes) -> bytes:
        lines = re.sub(rb"\r(?!\n)", b"\n", lines)
        return rewrite(lines) if rewrite else lines

    return cr_to_lf


def _check_bom(path: Path, encoding: str, label: str, not_utf8: str) -> None:
    """A byte order mark says the file is not in ``encoding`` (one that writes ASCII as ASCII): read in
    it, the mark would begin the header's first name ('ÿþu s e r _ i d', 'ï»¿user_id'): "no user id
    column"."""
    head = _head(path)
    if head.startswith(_UTF16_BOMS):
        raise DataError(
            f"{label}: the file is UTF-16 (it starts with a UTF-16 byte order mark), not {encoding}: "
            "--set data.encoding=utf-16"
        )
    if head.startswith(codecs.BOM_UTF8):
        raise DataError(
            f"{label}: starts with a UTF-8 byte order mark but {not_utf8} is not UTF-8: the file mixes "
            f"encodings (data.encoding={encoding} would read the mark as text); re-save it in one encoding"
        )


def _remove(path: Path, fd: int) -> None:
    path.unlink(missing_ok=True)
    os.close(fd)  # drops the lock that told other runs the copy is in use


def lines_of(path: Path) -> Iterator[bytes]:
    """The lines of a file (decompressed), line ends kept; a damaged archive is a DataError."""
    try:
        with open_bytes(path) as f:
            yield from f
    except (gzip.BadGzipFile, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise _damaged(path, exc) from None


def _chunks(path: Path) -> Iterator[bytes]:
    """The file's bytes (decompressed), ``_CHUNK`` at a time; a damaged archive is a DataError."""
    try:
        with open_bytes(path) as f:
            while chunk := f.read(_CHUNK):
                yield chunk
    except (gzip.BadGzipFile, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise _damaged(path, exc) from None


def _head(path: Path) -> bytes:
    """The first chunk of the file's (decompressed) bytes."""
    chunks = _chunks(path)
    try:
        return next(chunks, b"")
    finally:
        chunks.close()


def not_utf8_at(path: Path) -> str | None:
    """Where the file stops being UTF-8 ("line 3 (byte 0xe9)"), or None when it is UTF-8 throughout."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    try:
        for chunk in _chunks_then_end(path):
            decoder.decode(chunk, final=chunk == b"")
            lines += chunk.count(b"\n")
    except UnicodeDecodeError as exc:
        line = lines + exc.object[: exc.start].count(b"\n")
        return f"line {line} (byte 0x{exc.object[exc.start]:02x})"
    return None


def _utf8_copy(
    path: Path,
    encoding: str | None,
    label: str,
    rewrite: Callable[[bytes], bytes] | None,
    cr_line_ends: bool = False,
) -> tuple[int, Path]:
    """A temporary file holding ``path``'s text (decompressed; decoded from ``encoding`` unless None) as
    UTF-8, ``rewrite`` applied to whole lines, and its descriptor, which holds the copy's lock until
    ``_remove``; bytes that are not ``encoding`` are a DataError naming the line and the key."""
    pieces = _utf8_pieces(path, encoding, label, cr_line_ends)
    try:
        return _temporary_copy(_COPY_PREFIX, ".txt", (rewrite(t) if rewrite else t for t in pieces))
    except OSError as exc:  # a full or read-only temporary folder
        raise _no_room(exc, encoding, label) from None


def _temporary_copy(prefix: str, suffix: str, pieces: Iterator[bytes]) -> tuple[int, Path]:
    """A temporary file (named ``prefix`` + this pid + "-...": see ``_remove_stale_copies``) holding the
    ``pieces`` written one after the other, and its descriptor, which holds the file's lock until
    ``_remove``; nothing is left behind when writing fails."""
    fd, name = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", suffix=suffix)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until _remove, or by the kernel until this process ends
    try:
        with os.fdopen(os.dup(fd), "wb") as out:  # a second descriptor: closing it keeps the lock
            for piece in pieces:
                out.write(piece)
    except BaseException:
        _remove(Path(name), fd)
        raise
    return fd, Path(name)


def _utf8_pieces(path: Path, encoding: str | None, label: str, cr_line_ends: bool) -> Iterator[bytes]:
    """The file's text as UTF-8 in pieces of whole lines (the last one may lack its line end); lines end
    at "\n", with ``cr_line_ends`` at "\r" too."""
    decoder = codecs.getincrementaldecoder(encoding)() if encoding else None
    lines = 1
    pending: list[bytes] = []  # the start of a line that began in an earlier chunk
    for chunk in _chunks_then_end(path):
        final = chunk == b""
        if decoder is not None:
            try:
                text = decoder.decode(chunk, final=final)
            except UnicodeDecodeError as exc:
                raise _not_in_encoding(exc, encoding, label, lines) from None
            except UnicodeError as exc:
                raise _no_bom(exc, encoding, label) from None
            lines += text.count("\n")
            chunk = text.encode("utf-8")
        end = len(chunk) if final else _after_last_line_end(chunk, cr_line_ends)
        if end or final:
            yield b"".join([*pending, chunk[:end]])
            pending = []
        pending.append(chunk[end:])


_SPECIALS: dict[str, re.Pattern[str]] = {}


def _scan_line(line: str, delimiter: str, quoted: bool) -> tuple[bool, int]:
    """One line of a CSV file by Arrow's rules (a quote opens a value only as its first character, ``""``
    inside a quoted value is a quote, and a quoted value may hold line breaks), ``quoted`` when a quoted
    value is open at its start: whether one is open at its end, and how many separators outside quotes it
    holds (the fields that start on it, past its first). Only quotes, separators and line ends are seen."""
    special = _SPECIALS.setdefault(
        delimiter, re.compile("|".join(map(re.escape, ('"', delimiter, "\n", "\r"))))
    )
    separators, skip = 0, -1
    for found in special.finditer(line):
        at, ch = found.start(), found.group()
        if at == skip:
            continue
        if quoted:
            if ch == '"' and line.startswith('"', at + 1):  # "" in a quoted value: a quote, the value goes on
                skip = at + 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = at == 0 or line[at - 1] in (delimiter, "\n", "\r")  # a value's first character
        elif ch == delimiter:
            separators += 1
    return quoted, separators


@dataclass
class _Row:
    """Where one data row of a delimited file lies: the line each of its fields starts on, the line it
    ends on, and whether a quoted value was still open at the end of the file (it took the rest)."""

    starts: list[int]
    last: int
    unclosed: bool = False

    @property
    def first(self) -> int:
        return self.starts[0]

    def spans(self, index: int) -> bool:
        """Whether field ``index`` runs past the line it starts on (a quoted value holding line breaks)."""
        if index >= len(self.starts):
            return False
        end = self.starts[index + 1] if index + 1 < len(self.starts) else self.last
        return end > self.starts[index]


def _after_last_line_end(chunk: bytes, cr_line_ends: bool) -> int:
    """Where the chunk's last whole line ends (0: none does); a "\r" last in the chunk may be the start
    of a "\r\n", so it does not end one."""
    end = chunk.rfind(b"\n") + 1
    return max(end, chunk.rfind(b"\r", 0, len(chunk) - 1) + 1) if cr_line_ends else end


def _remove_stale_copies() -> None:
    """Remove the UTF-8 copies that processes killed while reading (SIGKILL, out of memory) left in the
    temporary folder. Only what is provably a dead copy of ours goes: our name (prefix, writer's pid), our
    user's plain file, a writer pid that is no running process, and no lock on it (a writer holds one from
    creation to removal; the kernel drops it when the process ends, however it ends)."""
    if fcntl is None:  # not POSIX: no lock to prove a copy dead
        return
    try:
        entries = list(os.scandir(tempfile.gettempdir()))
    except OSError:
        return
    for entry in entries:
        match = _COPY_NAME.fullmatch(entry.name)
        if match is None or _alive(int(match.group(1) or match.group(2))):
            continue
        try:
            stat = entry.stat(follow_symlinks=False)
            if not entry.is_file(follow_symlinks=False) or stat.st_uid != os.getuid():
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: its writer is alive
            os.unlink(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (alive), or no pid at all: not ours to judge
        return True
    return True


def _no_room(exc: OSError, encoding: str | None, label: str) -> DataError:
    why = f"data.encoding={encoding}" if encoding else "a form Arrow reads"
    return DataError(
        f"{label}: cannot write its UTF-8 copy ({why}) to the temporary folder "
        f"{tempfile.gettempdir()} ({exc.strerror or exc}); point TMPDIR at a folder with about the file's "
        "size free" + (", or re-save the file as UTF-8" if encoding else "")
    )


def _chunks_then_end(path: Path) -> Iterator[bytes]:
    yield from _chunks(path)
    yield b""  # the decoder's final call: bytes left over at the end are an error


def check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")


_SAVE_AS_CSV = "save the sheet as CSV (Excel: File > Save As > CSV UTF-8) and set data.path to that file"
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003 .xls (and other Office files)
_PARQUET_MAGIC = b"PAR1"  # at the start and at the end of the file


# Compressions Arrow could read but the line scans and the copies here do not: named, not misread as text.
_OTHER_COMPRESSIONS = {
    rb"BZh[1-9]1AY&SY": "bzip2",
    rb"\xfd7zXZ\x00": "xz",
    rb"\x28\xb5\x2f\xfd": "zstd",
    rb"7z\xbc\xaf\x27\x1c": "7-Zip",
}


def check_not_binary(path: Path, side: str | None = None) -> None:
    """A workbook, a Parquet file or an archive other than gzip/zip read as text was "not valid UTF-8 ...
    set data.encoding" (with data.encoding=latin-1: garbage column names). ``side``: a side table's
    entity."""
    with open(path, "rb") as f:
        head = f.read(10)
        f.seek(max(0, path.stat().st_size - 4))
        tail = f.read()
    if head.startswith(_OLE2_MAGIC):
        raise DataError(f"{path}: an Excel 97-2003 workbook (.xls), not a text file: {_SAVE_AS_CSV}")
    if head[:4] == _PARQUET_MAGIC == tail:
        fix = "--set data.format=parquet" if side is None else "name it .parquet"
        raise DataError(f"{path}: a Parquet file, not a text file: {fix}")
    kind = next((name for magic, name in _OTHER_COMPRESSIONS.items() if re.match(magic, head)), None)
    if kind is not None:
        raise DataError(
            f"{path}: compressed with {kind}, which is not read (gzip and zip are): decompress it, or "
            "recompress it with gzip (log.csv.gz)"
        )


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


def is_gzip(path: Path) -> bool:
    """Whether the file is gzip-compressed (by its first bytes, whatever its name)."""
    return _magic(path)[:2] == _GZIP_MAGIC


def is_zip(path: Path) -> bool:
    """Whether the file is a zip archive (by its first bytes, whatever its name)."""
    return _magic(path) in _ZIP_MAGICS


def is_compressed(path: Path) -> bool:
    magic = _magic(path)
    return magic[:2] == _GZIP_MAGIC or magic in _ZIP_MAGICS


def zip_member(path: Path) -> str:
    """The name of the one file a zip archive holds (folders and macOS ``__MACOSX/`` entries aside); an
    archive of several files, or a damaged one, is a DataError saying to unzip it."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise _bad_zip(path, exc) from None
    names = [i.filename for i in entries if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
    if "[Content_Types].xml" in names and any(name.startswith("xl/") for name in names):
        raise DataError(f"{path}: an Excel workbook (.xlsx), not a text file: {_SAVE_AS_CSV}")
    if not names:
        raise DataError(
            f"{path}: an empty zip archive (no file in it); zip the log file itself, or set data.path to it"
        )
    if len(names) != 1:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise DataError(
            f"{path}: a zip archive holding {len(names)} files ({shown}); only a zip of one file is read: "
            "unzip it and set data.path to the file (or folder) to read"
        )
    return names[0]


def _unzip_it(path: Path, why: str) -> DataError:
    return DataError(f"{path}: {why}; unzip it with another tool and set data.path to the file")


def _bad_zip(path: Path, exc: Exception) -> DataError:
    return DataError(f"{path}: a zip file that cannot be read ({exc}); check or re-create it")


def open_bytes(path: Path) -> BinaryIO:
    """The file for reading bytes, decompressed as it is read when it is gzip'd (``log.csv.gz``) or the one
    file of a zip archive (``log.csv.zip``); an archive that cannot be opened is a DataError."""
    if is_zip(path):
        member = zip_member(path)
        try:
            with zipfile.ZipFile(path) as archive:
                return archive.open(member)  # stays readable after the archive's close
        except zipfile.BadZipFile as exc:
            raise _bad_zip(path, exc) from None
        except NotImplementedError:  # Deflate64 (Windows' "Send to > Compressed folder" of a large file)
            method = archive.getinfo(member).compress_type
            raise _unzip_it(
                path, f"{member} in it is compressed with a method Python cannot read (zip method {method})"
            ) from None
        except RuntimeError:  # password-protected
            raise _unzip_it(path, f"{member} in it is encrypted (password-protected)") from None
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # noqa: SIM115 - the caller closes


def _damaged(path: Path, exc: Exception) -> DataError:
    return _bad_zip(path, exc) if is_zip(path) else _bad_gzip(path, exc)


def _bad_gzip(path: Path, exc: Exception) -> DataError:
    return DataError(f"{path}: a gzip file that cannot be decompressed ({exc}); check or re-create it")


@contextlib.contextmanager
def arrow_source(path: Path) -> Iterator[str]:
    """The path Arrow's Parquet reader reads (it seeks, so it cannot read a stream): the file itself, or for
    a gzip'd or zipped one a temporary decompressed copy, written a chunk at a time and removed when the
    block ends. The decompressed bytes were read whole into memory, then copied into Arrow's: a 216 MB
    Parquet file (three id columns and a text one) gzip'd, its three log columns read, peaked at 489 MB
    (zipped: 610 MB); now at 187 MB, as the plain file does (Arrow reads only the columns asked for)."""
    if not is_compressed(path):
        yield str(path)
        return
    _remove_stale_copies()
    try:
        fd, copy = _temporary_copy(_PARQUET_PREFIX, ".parquet", _chunks(path))
    except OSError as exc:  # a full or read-only temporary folder
        raise DataError(
            f"{path}: cannot write its decompressed copy (Arrow reads Parquet from a file it can seek in) to "
            f"the temporary folder {tempfile.gettempdir()} ({exc.strerror or exc}); point TMPDIR at a "
            "folder with the decompressed size free, or decompress the file and set the path to it"
        ) from None
    try:
        yield str(copy)
    finally:
        _remove(copy, fd)


# A field that is a quoted value after a blank (`1, "B001"`): Arrow takes a quote only at a field's first
# character, so it keeps these quotes as part of the value, and an id "B001" would silently become '"B001"'.
_QUOTED_AFTER_BLANK = r'^\s+"(.*)"\s*$'


def _unquote_after_blank(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The values of ``_QUOTED_AFTER_BLANK`` fields as a CSV reader that skips initial blanks reads them
    (quotes off, doubled quotes single); the other values as they are."""
    if not pa.types.is_string(column.type):
        return column
    hit = pc.fill_null(pc.match_substring_regex(column, _QUOTED_AFTER_BLANK), False)
    if not pc.any(hit).as_py():
        return column
    inner = pc.replace_substring(pc.replace_substring_regex(column, _QUOTED_AFTER_BLANK, r"\1"), '""', '"')
    return pc.if_else(hit, inner, column)


def _cr_line_ends(spec: TextSpec) -> bool:
    """Whether the first line ends in a carriage return alone (classic Mac OS line ends, as Excel's "CSV
    (Macintosh)" writes): Arrow ends rows there, the line scans that name a bad line only at ``\n``."""
    first_line = _head(spec.path).decode(spec.encoding, "replace").split("\n", 1)[0]
    return re.search(r"\r.", first_line, re.DOTALL) is not None


def _squeeze_blanks(lines: bytes) -> bytes:
    """Whole lines of a user_item file: runs of blanks -> one space, blanks at line ends dropped."""
    lines = re.sub(rb"[ \t\v\f]+", b" ", lines)
    return re.sub(rb"^ | (?=\r?$)", b"", lines, flags=re.MULTILINE)


def set_separator(key: str, sep: str) -> str:
    """The ``--set`` giving ``key`` the separator ``sep``, as a shell passes it and YAML reads it: a bare
    ``|`` is YAML's block-text sign (an empty value), so that one is quoted for YAML inside the shell's."""
    return f"--set \"{key}='{sep}'\"" if sep == "|" else f"--set {key}='{sep}'"


class TextFile:
    """One delimited file: its column names, a fast columnar read, and error locating."""

    def __init__(self, spec: TextSpec) -> None:
        check_file(spec.path)
        check_not_binary(spec.path, spec.side)
        self.spec = spec
        self.label = str(spec.path)
        self.delimiter = " " if spec.whitespace else _UNIT_SEP if len(spec.sep) > 1 else spec.sep
        # The readers and line scans take UTF-8 split at one character: a copy when the file is not that.
        self._text = Utf8Text(spec.path, spec.encoding, self.label, self._rewrite(), _cr_line_ends(spec))
        self.names = self._read_header() if spec.header else list(spec.names)

    def _rewrite(self) -> Callable[[bytes], bytes] | None:
        if self.spec.whitespace:
            return _squeeze_blanks
        if len(self.spec.sep) > 1:
            sep, unit = self.spec.sep.encode("utf-8"), _UNIT_SEP.encode()
            return lambda lines: lines.replace(sep, unit)
        return None

    # ------------------------------------------------------------------------------------ reading

    def _lines(self) -> Iterator[bytes]:
        return self._text.lines()

    def first_fields(self) -> list[str]:
        """The fields of the first line that is not blank (a header-less file's first row)."""
        line = next((raw for raw in self._lines() if raw.rstrip(b"\r\n")), b"")
        return self._split(line.decode("utf-8", "replace"))

    def _split(self, line: str, header: bool = False) -> list[str]:
        """The fields of ``line``. In a header, a quoted name after a blank (``"user_id", "item_id"``) is
        that name, not one with its quotes; data lines are split as Arrow splits them (no such rule)."""
        line = line.rstrip("\r\n")
        if self.spec.quoting:
            return next(csv.reader([line], delimiter=self.delimiter, skipinitialspace=header), [])
        return line.split(self.delimiter)

    def _read_header(self) -> list[str]:
        first = next(iter(self._lines()), None)
        if first is None:  # not one byte, yet check_file saw some: compressed or decoded to nothing
            raise DataError(
                f"{self.label}: no text once decompressed or decoded; check or re-create the file"
            )
        try:
            text = first.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{self.label}: line 1 (the header): not valid UTF-8 (byte 0x{first[exc.start]:02x}); "
                f"{reencode_hint(first)}"
            ) from None
        names = [n.strip() for n in self._split(text, header=True)]
        if not any(names):
            raise DataError(f"{self.label}: line 1 should be the header with the column names but is empty")
        if all(_NUMBER.fullmatch(n) for n in names):  # a header-less file: its first row is not names
            fix = (
                "for a log without a header line set data.header=false and name its columns in order, e.g. "
                "--set data.columns=[user_id,item_id,rating,timestamp]"
                if self.spec.side is None
                else f"for a {self.spec.side} table without a header line name its columns in order with "
                f"data.{self.spec.side}_features_columns, e.g. [{self.spec.side}_id, ...]"
            )
            raise DataError(
                f"{self.label}: line 1 should be the header with the column names but holds only numbers "
                f"({', '.join(names)}); {fix}"
            )
        if len(names) == 1 and not self.spec.whitespace:
            self._check_other_separator(names[0])
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:  # pyarrow would read one of them, silently
            raise DataError(
                f"{self.label}: line 1 (the header): column name(s) {', '.join(map(repr, repeated))} "
                "appear more than once; rename them so each column has its own name"
            )
        return names

    def _check_other_separator(self, header: str) -> None:
        """A header of one column holding another separator: the file is not separated by ``spec.sep``
        (a tab-separated file named .csv); say which separator, not "no user id column"."""
        found = next((sep for sep in _OTHER_SEPARATORS if sep != self.spec.sep and sep in header), None)
        if found is None:
            return
        shown = "tab" if found == "\t" else repr(found)
        if self.spec.side is not None:
            key = f"data.{self.spec.side}_features_sep"
            fix = f'set {key}: "\\t"' if found == "\t" else set_separator(key, found)
        else:
            fix = {"\t": "--set data.format=tsv", ",": "--set data.format=csv"}.get(
                found, set_separator("data.sep", found)
            )
        raise DataError(
            f"{self.label}: line 1 (the header) is one column {header!r} when split at {self.spec.sep!r}; "
            f"the file looks {shown}-separated: {fix}"
        )

    def read(self, columns: list[str], string_columns: tuple[str, ...] = ()) -> pa.Table:
        """The named columns of all data rows; the other columns are parsed for their count only."""
        # No Python objects go into the reader (no invalid_row_handler, no buffer wrapping Python bytes):
        # Arrow frees the reader on one of its pool threads, possibly after read_csv has returned, and
        # freeing a Python object there takes the GIL; if Python is exiting by then (a data error raised
        # right after the read), that thread is killed mid-destructor and the process aborts with
        # "terminate called without an active exception" (exit 134). A bad row makes pyarrow raise
        # instead, and the line scan below names it.
        read_opts = pv.ReadOptions(column_names=self.names, skip_rows=1 if self.spec.header else 0)
        # newlines_in_values: Arrow splits the file into blocks at line ends, inside quotes too unless told
        # values may hold line breaks; a quote never closed then took the rest of its block, silently (a 3 MB
        # log with one in its third row lost 73,577 of 200,002 rows), and a valid quoted line break at a
        # block end would split its row. A 67 MB log reads in 0.29-0.42 s with it, 0.23-0.35 s without.
        parse_opts = pv.ParseOptions(
            delimiter=self.delimiter,
            quote_char='"' if self.spec.quoting else False,
            newlines_in_values=self.spec.quoting,
        )
        convert_opts = pv.ConvertOptions(
            include_columns=columns,
            column_types={c: pa.string() for c in string_columns},
            strings_can_be_null=False,
            null_values=[""],  # only empty fields are missing; "NA" or "nan" are values to complain about
        )
        try:
            table = pv.read_csv(
                self._text.source(),
                read_options=read_opts,
                parse_options=parse_opts,
                convert_options=convert_opts,
            )
        except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:  # OSError: a damaged gzip file
            self._text.check_archive()
            raise self.diagnose() or DataError(f"{self.label}: cannot be read: {exc}") from None
        if self.spec.quoting:
            self._check_no_unclosed_quote(table.num_rows)
        if table.num_rows == 0:
            if self.spec.header:
                raise DataError(f"{self.label}: only a header line, no data rows")
            raise DataError(f"{self.label}: no data rows (only blank lines)")
        if self.spec.quoting:
            for name in string_columns:
                if name in table.column_names:
                    i = table.column_names.index(name)
                    table = table.set_column(i, name, _unquote_after_blank(table.column(i)))
        return table

    def _check_no_unclosed_quote(self, rows: int) -> None:
        """A quote never closed in a column not read takes the rest of the file as that value, silently (an
        81-line log read as 41 rows). A file whose quotes are all closed holds an even number of them (a
        quote in a quoted value is doubled), so only an odd count, a count at C speed, pays for the line scan
        that finds the row and names the quote (a stray quote inside an unquoted value is literal to Arrow,
        and scanned to no error)."""
        if rows == 0 or sum(chunk.count(b'"') for chunk in _chunks(self._text.path)) % 2 == 0:
            return
        found = self._row(rows - 1)
        if found is not None and found.unclosed:
            index = len(found.starts) - 1
            column = self.names[index] if index < len(self.names) else f"column {index + 1}"
            raise self._spanning_quote(found, index, column, "")

    # ----------------------------------------------------------------------------- error locating

    def line_of_row(self, row: int) -> int:
        """1-based line number data row ``row`` (0-based) starts on; -1 past the last row."""
        found = self._row(row)
        return -1 if found is None else found.first

    def locate(self, row: int) -> str:
        return f"line {self.line_of_row(row)}"

    def where(self) -> Where:
        """How a bad value of this file is pointed at (``columns.Where``)."""
        return Where(self.label, self.locate, self.value_error)

    def _row(self, row: int) -> _Row | None:
        """Where data row ``row`` (0-based) lies, as Arrow reads rows: blank lines skipped, a quoted value's
        line breaks kept in its row (the lines after are not rows of their own); None past the last row."""
        seen, starts, quoted, number = -1, None, False, 0
        header, quoting = self.spec.header, self.spec.quoting
        for number, raw in enumerate(self._lines(), 1):
            if starts is None:
                if number == 1 and header or not raw.rstrip(b"\r\n"):
                    continue
                seen, starts = seen + 1, [number]  # the line each field of the row starts on
            if quoting and (quoted or b'"' in raw):
                quoted, separators = _scan_line(raw.decode("utf-8", "replace"), self.delimiter, quoted)
                starts += [number] * separators
            if quoted:
                continue
            if seen == row:
                return _Row(starts, number)
            starts = None
        if starts is not None and seen == row:  # a quote never closed took the rest of the file
            return _Row(starts, number, unclosed=True)
        return None

    def value_error(self, row: int, column: str, problem: str) -> DataError:
        """``problem`` with the value in data row ``row`` (0-based), column ``column``: at the line the value
        starts on; a quoted value that runs on past its line is named as such (the likely cause)."""
        found = self._row(row)
        index = self.names.index(column) if column in self.names else len(self.names)
        if found is None:
            return DataError(f"{self.label}: line -1, column {column!r}: {problem}")
        if found.spans(index):
            return self._spanning_quote(found, index, column, problem)
        line = found.starts[index] if index < len(found.starts) else found.first
        return DataError(f"{self.label}: line {line}, column {column!r}: {problem}")

    def _spanning_quote(self, found: _Row, index: int, column: str, problem: str) -> DataError:
        start = found.starts[index]
        fix = (
            f"close the quote on line {start} (a quote that is part of a value: doubled, in a quoted value, "
            '"a""b")'
        )
        opens = f'{self.label}: line {start}, column {column!r}: the quote (") that opens this value'
        if found.unclosed and index == len(found.starts) - 1:
            return DataError(
                f"{opens} is never closed (an unterminated quote): the rest of the file, lines "
                f"{start}-{found.last}, is read as its value; {fix}"
            )
        end = found.starts[index + 1] if index + 1 < len(found.starts) else found.last
        shown = problem if len(problem) <= 160 else problem[:160] + "..."
        return DataError(
            f"{opens} runs past the end of the line and is closed only on line {end}, so lines {start}-{end} "
            f"are read as one value ({shown}); {fix}"
        )

    def diagnose(self) -> DataError | None:
        """The first line that is not valid UTF-8 or has the wrong number of fields, as a DataError."""
        names = self.names
        shown_sep = "whitespace" if self.spec.whitespace else repr(self.spec.sep)
        # A quoted value open at a line end: the row's first line, that line's text, its fields so far.
        opened: tuple[int, str, int] | None = None
        for number, raw in enumerate(self._lines(), 1):
            if opened is None and (number == 1 and self.spec.header or not raw.rstrip(b"\r\n")):
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = self._column_at(raw, exc.start)
                return DataError(
                    f"{self.label}: line {number}, column {column!r}: not valid UTF-8 "
                    f"(byte 0x{raw[exc.start]:02x}); {ENCODING_HINT}"
                )
            if self.spec.quoting and (opened is not None or '"' in line):
                # A quoted value may hold line breaks (Arrow reads it so): the row goes on to the line where
                # the quote closes, and a quote never closed took the rest of the file.
                first, opening, fields = opened or (number, line, 1)
                quoted, separators = _scan_line(line, self.delimiter, opened is not None)
                if quoted:
                    opened = (first, opening, fields + separators)
                    continue
                opened = None
                if first != number:
                    if fields + separators != len(names):
                        return self._quote_error(
                            first, opening, f"is closed only on line {number}", fields + separators
                        )
                    continue
            fields = self._split(line)
            if len(fields) > len(names):
                # the user_item format: a line per user with all its items is the common mix-up
                hint = (
                    "; a user_item file has one 'user item' pair per line, in time order (a line per user "
                    "with all of its items is another format: write one pair per line)"
                    if self.spec.whitespace
                    else ""
                )
                return DataError(
                    f"{self.label}: line {number}: {len(fields)} fields but {len(names)} columns "
                    f"({', '.join(names)}); extra field(s) after column {names[-1]!r} (separator {shown_sep})"
                    + hint
                )
            if len(fields) < len(names):
                return DataError(
                    f"{self.label}: line {number}: {len(fields)} fields but {len(names)} columns "
                    f"({', '.join(names)}); column {names[len(fields)]!r} is missing (separator {shown_sep})"
                )
        if opened is not None:
            return self._quote_error(opened[0], opened[1], "is never closed", None)
        return None

    def _quote_error(self, number: int, opening: str, closed: str, fields: int | None) -> DataError:
        """The quote that opens a value on line ``number`` (``opening``) and ``closed`` (where, if anywhere):
        Arrow read the lines up to there as one value, and ``fields`` fields in that row."""
        index = len(self._split(opening)) - 1  # the open value is the line's last field
        column = self.names[index] if index < len(self.names) else f"field {index + 1}"
        took = (
            "the rest of the file is read as its value"
            if fields is None
            else f"the lines up to there are read as one row of {fields} fields ({len(self.names)} columns)"
        )
        return DataError(
            f'{self.label}: line {number}: the quote (") that opens column {column!r} {closed}: {took}; '
            'close it on that line (a quote that is part of a value: doubled, in a quoted value, "a""b")'
        )

    def _column_at(self, raw: bytes, offset: int) -> str:
        index = raw[:offset].count(self.delimiter.encode())
        return self.names[index] if index < len(self.names) else f"field {index + 1}"
