"""Item titles from the metadata file next to the log (MovieLens u.item / movies.dat / movies.csv,
RecBole ``*.item``). Titles are a convenience for inspecting recommendations, so a metadata file that
cannot be read is logged and skipped instead of stopping the run."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from metarec_dist.data.columns import CANDIDATES, bare
from metarec_dist.data.config import DataConfig, is_utf8
from metarec_dist.data.errors import DataError
from metarec_dist.data.layout import Layout
from metarec_dist.data.textio import Utf8Text, not_utf8_at, open_bytes

log = logging.getLogger(__name__)
_INT = re.compile(r"\s*-?\d+\s*")


@contextmanager
def _text(path: Path, encoding: str) -> Iterator[TextIO]:
    """The metadata file's text in ``encoding`` (``data.encoding``, as ``textio.Utf8Text`` reads it), read
    a buffer at a time. Left at UTF-8, a file that is not is read as Latin-1: old MovieLens metadata
    (u.item, movies.dat) is; newer files are UTF-8. Lines end at "\n" only (as ``io.StringIO`` reads)."""
    if not is_utf8(encoding):
        copy = Utf8Text(path, encoding, str(path))  # alive until the text is read: it owns its copy
        path, decode = copy.path, "utf-8"
    else:
        decode = "utf-8-sig" if not_utf8_at(path) is None else "latin-1"
    with io.TextIOWrapper(open_bytes(path), encoding=decode, newline="\n") as text:
        yield text


_LINE_END = re.compile(r"\r\n|\r|\n")


def _lines(text: TextIO) -> Iterator[str]:
    """The lines of ``text``, ended by "\n", "\r\n" or "\r" (as the csv reading ends them). Not
    ``str.splitlines``, which also splits at U+0085 (byte 0x85 read as Latin-1: a Windows-1252 "…" in a
    title), U+2028, form feeds and the like: such a title became two lines, its end dropped."""
    for line in text:
        lines = _LINE_END.split(line)
        if lines[-1] == "":  # after the line's own end
            lines.pop()
        yield from lines


def _key(raw: str, string_ids: bool) -> str | None:
    """Raw item id as the log spells it: integers are normalised ("007" -> "7") like the ids."""
    raw = raw.strip()
    if string_ids:
        return raw or None
    return str(int(raw)) if _INT.fullmatch(raw) else None


def read_titles(layout: Layout, cfg: DataConfig) -> dict[str, str] | None:
    assert layout.meta is not None
    try:
        with _text(layout.meta, cfg.encoding) as text:
            rows = _rows(layout.kind, text, cfg)
            if rows is None:
                return None
            titles = {}
            for row in rows:
                if len(row) == 2 and (key := _key(row[0], cfg.string_ids)) is not None:
                    titles[key] = row[1].strip()
    except (OSError, ValueError, StopIteration, csv.Error, DataError) as exc:
        log.warning("item metadata %s not used: %s", layout.meta, exc)
        return None
    return titles or None


def _rows(kind: str, text: TextIO, cfg: DataConfig) -> Iterator[Sequence[str]] | None:
    """(raw item id, title) rows of the metadata file, or None when its header names no such columns."""
    if kind == "movielens-100k":
        return (line.split("|", 2)[:2] for line in _lines(text))
    if kind == "movielens-1m":
        return (line.split("::", 2)[:2] for line in _lines(text))
    if kind == "movielens-csv":
        reader = csv.reader(text)
        header = [h.strip().lower() for h in next(reader)]
        i_id, i_title = header.index("movieid"), header.index("title")
        return ((r[i_id], r[i_title]) for r in reader if len(r) > max(i_id, i_title))
    return _recbole_rows(_lines(text), cfg)


def _recbole_rows(lines: Iterator[str], cfg: DataConfig) -> Iterator[Sequence[str]] | None:
    first = next(lines, None)
    header = [bare(h).lower() for h in first.split("\t")] if first is not None else []
    wanted_item = bare(cfg.item_col).lower() if cfg.item_col else None
    item_candidates = [wanted_item] if wanted_item else list(CANDIDATES["item"])
    i_id = next((header.index(c) for c in item_candidates if c in header), None)
    if cfg.title_col:
        i_title = header.index(bare(cfg.title_col).lower()) if bare(cfg.title_col).lower() in header else None
    else:
        i_title = next((i for i, h in enumerate(header) if "title" in h), None)
    if i_id is None or i_title is None:
        log.info("item metadata: no item id / title column in the .item header %s", header)
        return None
    needed = max(i_id, i_title)
    return ((f[i_id], f[i_title]) for f in (line.split("\t") for line in lines) if len(f) > needed)
