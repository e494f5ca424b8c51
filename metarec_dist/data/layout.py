"""Which file to read, in which format: MovieLens/RecBole recognition, and the dataset-name resolver."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from metarec_dist.data.config import DataConfig, is_utf8
from metarec_dist.data.errors import DataError
from metarec_dist.data.fetch import ARCHIVES, canonical_name, default_data_dir, download
from metarec_dist.data.textio import zip_member
from metarec_dist.metrics.redact import redact_text

log = logging.getLogger(__name__)

# MovieLens ratings file -> (layout, item metadata file next to it).
MOVIELENS_FILES = {
    "u.data": ("movielens-100k", "u.item"),
    "ratings.dat": ("movielens-1m", "movies.dat"),
    "ratings.csv": ("movielens-csv", "movies.csv"),
}
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


COMPRESSED = (".gz", ".zip")


def format_suffix(path: Path) -> str:
    """The extension that names the format, lower case; a ``.gz`` or ``.zip`` after it is looked through
    (``log.csv.gz`` is a gzip'd csv, ``log.csv.zip`` a zip of one csv; the readers decompress them)."""
    suffixes = [s.lower() for s in path.suffixes]
    return suffixes[-2] if len(suffixes) > 1 and suffixes[-1] in COMPRESSED else path.suffix.lower()


def _is_inter(path: Path) -> bool:
    """A RecBole interaction file: ``x.inter``, or gzip'd ``x.inter.gz``."""
    return path.name.endswith((".inter", ".inter.gz"))


def _inter_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_inter(p) and p.is_file())


def recbole_sibling(inter: Path, suffix: str) -> Path:
    """The RecBole atomic file ``suffix`` (``.item``, ``.user``) of the dataset of ``inter``: plain or
    gzip'd, whichever is there (the plain name when neither is)."""
    base = inter.name.removesuffix(".gz").removesuffix(".inter")
    plain = inter.with_name(base + suffix)
    gzipped = inter.with_name(base + suffix + ".gz")
    return gzipped if gzipped.is_file() and not plain.is_file() else plain


def file_kind(path: Path) -> str | None:
    """The format the file's extension names (EXTENSIONS), or None."""
    return EXTENSIONS.get(format_suffix(path))


@dataclass(frozen=True)
class Layout:
    # movielens-100k | movielens-1m | movielens-csv | recbole | csv | tsv | parquet | jsonl | user_item
    kind: str
    file: Path  # the interaction log
    meta: Path | None = None  # item metadata (titles), when found

    def files(self) -> list[Path]:
        return [self.file] + ([self.meta] if self.meta is not None else [])


def movielens_layout(path: Path) -> Layout | None:
    candidates = [path] if path.is_file() else [path / name for name in MOVIELENS_FILES]
    for file in candidates:
        if file.name in MOVIELENS_FILES and file.is_file():
            kind, meta = MOVIELENS_FILES[file.name]
            meta_file = file.with_name(meta)
            return Layout(kind, file, meta_file if meta_file.is_file() else None)
    return None


def recbole_layout(path: Path) -> Layout:
    """A ``*.inter`` (or gzip'd ``*.inter.gz``) file, or a folder holding one (``<folder>/<folder>.inter``
    preferred)."""
    if path.is_file():
        if not _is_inter(path):
            raise DataError(f"{path}: a RecBole interaction file ends in .inter (or .inter.gz)")
        inter = path
    else:
        found = _inter_files(path)
        preferred = [p for p in found if p.name in (f"{path.name}.inter", f"{path.name}.inter.gz")]
        if len(preferred) == 1:
            inter = preferred[0]
        elif len(found) == 1:
            inter = found[0]
        elif not found:
            raise DataError(f"{path}: no RecBole *.inter (or *.inter.gz) file in this folder")
        else:
            names = ", ".join(f.name for f in found)
            raise DataError(f"{path}: several .inter files ({names}); set data.path to the one to use")
    item = recbole_sibling(inter, ".item")
    return Layout("recbole", inter, item if item.is_file() else None)


def has_dataset(path: Path) -> bool:
    return path.is_dir() and (movielens_layout(path) is not None or bool(_inter_files(path)))


def detect(path: Path) -> Layout:
    """format: auto -- MovieLens and RecBole layouts (file or folder), else the file extension."""
    layout = movielens_layout(path)
    if layout is not None:
        return layout
    if _is_inter(path) or path.is_dir() and _inter_files(path):
        return recbole_layout(path)
    kind = file_kind(path)
    if path.is_file() and kind is None and path.suffix.lower() == ".zip":  # log.zip: named by its one file
        kind = file_kind(Path(zip_member(path)))
    if path.is_file() and kind is not None:
        return Layout(kind, path)
    what = "folder" if path.is_dir() else "file"
    raise DataError(
        f"{path}: cannot tell the format of this {what} (format auto knows MovieLens u.data / ratings.dat / "
        f"ratings.csv, RecBole *.inter and the extensions {', '.join(sorted(EXTENSIONS))}, also gzip'd "
        "or zipped as .csv.gz, .csv.zip etc.); "
        "set data.format to one of movielens, recbole, csv, tsv, parquet, jsonl, user_item"
    )


def _generic(path: Path, kind: str) -> Layout:
    if path.is_file():
        return Layout(kind, path)
    suffixes = [s for s, k in EXTENSIONS.items() if k == kind] if kind != "user_item" else [".txt"]
    found = sorted(p for p in path.iterdir() if p.is_file() and format_suffix(p) in suffixes)
    if len(found) == 1:
        return Layout(kind, found[0])
    raise DataError(
        f"{path}: is a folder with {len(found)} {'/'.join(suffixes)} files; set data.path to the file to read"
    )


def resolve_layout(cfg: DataConfig) -> Layout:
    if cfg.path is not None:
        if "://" in cfg.path:
            raise DataError(
                f"data.path: {redact_text(cfg.path)} is a URL; data.path reads local or mounted files only "
                "(download the file first, or use data.format=hub with data.name for a Hub dataset)"
            )
        path = Path(cfg.path).expanduser()
        if not path.exists():
            where = "" if path.is_absolute() else f", relative to the current folder {Path.cwd()}"
            raise DataError(f"data.path: {path} not found (no such file or folder{where})")
    else:
        assert cfg.name is not None  # DataConfig requires path or name for file formats
        path = find_or_download(cfg.name, cfg.data_dir)
    if cfg.format == "auto":
        return detect(path)
    if cfg.format == "movielens":
        layout = movielens_layout(path)
        if layout is None:
            raise DataError(f"{path}: no MovieLens ratings file here (u.data, ratings.dat or ratings.csv)")
        return layout
    if cfg.format == "recbole":
        return recbole_layout(path)
    return _generic(path, cfg.format)


_NO_FOLDER = ("synthetic", "hub")  # formats whose data.name is not a folder (hub: a Hub dataset id)


def dataset_folder(name: str, root: Path) -> Path | None:
    """The folder under ``root`` holding data set ``name`` (``ml-100k`` for ``movielens-100k``), if any."""
    key = canonical_name(name)
    folders = [name] + ([ARCHIVES[key].folder, key] if key in ARCHIVES else [])
    return next((root / f for f in dict.fromkeys(folders) if has_dataset(root / f)), None)


def with_recorded_data_dir(cfg: DataConfig, recorded: object) -> DataConfig:
    """A trained model's data config with ``data_dir`` set to ``recorded``, the data folder its ``data.name``
    set was found in when it trained ($METAREC_DATA_DIR then, or its default), while that still holds the
    set: found through METAREC_DATA_DIR, which the config does not record, an evaluation with another one
    read other data, or downloaded it. Recorded but no longer there, the current data folder is used, with
    a warning naming both (the data check then compares what it holds with what the model was trained on).
    Unchanged: a model from before the record, ``data.path`` or ``data.data_dir`` set."""
    if cfg.name is None or cfg.path is not None or cfg.data_dir is not None or cfg.format in _NO_FOLDER:
        return cfg
    if not isinstance(recorded, str) or not Path(recorded).is_absolute():
        return cfg
    then, now = Path(recorded), default_data_dir().absolute()
    if then == now:
        return cfg
    if dataset_folder(cfg.name, then) is not None:
        log.info(
            "data.name=%s: read from %s, where the model was trained on it (not %s)", cfg.name, then, now
        )
        return dataclasses.replace(cfg, data_dir=str(then))
    found = dataset_folder(cfg.name, now)
    instead = (
        f"reading {found} (METAREC_DATA_DIR now) instead"
        if found
        else f"the data folder now, {now} (METAREC_DATA_DIR), does not hold it either"
    )
    log.warning(
        "data.name=%s: the model was trained on the set in the data folder %s (METAREC_DATA_DIR then, or its "
        "default), which no longer holds it; %s. To use the training data, put it back there or point "
        "METAREC_DATA_DIR at the folder that holds it now",
        cfg.name,
        then,
        instead,
    )
    return cfg


def find_or_download(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder holding dataset ``name`` under the data dir; downloads it when known and missing.

    Existing files win: ``<data_dir>/ml-100k/`` with either the GroupLens files (``u.data``) or a
    RecBole atomic layout (``ml-100k.inter``) is found without touching the network.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    key = canonical_name(name)
    found = dataset_folder(name, root)
    if found is not None:
        return found
    if key not in ARCHIVES:
        raise DataError(
            f"dataset {name!r} not found in {root} (looked for {root / name} with MovieLens or RecBole "
            f"files); put the files there, set data.path, or use one of the downloadable names "
            f"{', '.join(ARCHIVES)}"
        )
    return download(key, root)


_SEP_WARNED: set[tuple[str, str]] = set()


def warn_if_sep_unused(cfg: DataConfig, layout: Layout | None, side_files: Iterable[Path]) -> None:
    """``data.sep`` is the separator of csv/tsv files (the log, a side table): set while none is read, it
    would be ignored without a word. A warning, not an error: ignoring it cannot misread a Parquet, JSON
    Lines, RecBole, MovieLens or user_item file (their layout fixes how fields are told apart), and a
    config is often reused with another data.path or data.format (a synthetic smoke run)."""
    what = cfg.format if layout is None else layout.kind
    _warn_if_path_unused(cfg, layout, what)
    _warn_if_header_unused(cfg, layout, what)
    _warn_if_encoding_unused(cfg, layout, what, side_files)
    if cfg.sep is None or any(file_kind(p) in ("csv", "tsv") for p in side_files):
        return
    if what in ("csv", "tsv"):
        return
    _warn_once(
        f"data.sep={cfg.sep!r}",
        what,
        layout,
        "{given} is ignored: {source} has no separator to set (data.sep applies to csv and tsv files only); "
        "remove data.sep, or set data.format=csv if the file is delimited text",
    )


def _warn_once(given: str, what: str, layout: Layout | None, template: str) -> None:
    """The warning of an unused data setting (``given``: how it was set), once per setting and format:
    ``template`` with ``{given}`` and ``{source}`` (the file and its kind, else the format) filled in."""
    if (given, what) in _SEP_WARNED:
        return
    _SEP_WARNED.add((given, what))
    source = f"the {what} data" if layout is None else f"{layout.file} ({what})"
    log.warning(template.format(given=given, source=source))


def _warn_if_encoding_unused(
    cfg: DataConfig, layout: Layout | None, what: str, side_files: Iterable[Path]
) -> None:
    """``data.encoding`` names the text files' encoding: set (not UTF-8) while every file read is Parquet
    (UTF-8 by definition), comes from the Hub (the datasets library decodes it) or is synthetic, it would
    be ignored without a word. A warning, as for data.sep: ignoring it cannot misread anything."""
    if is_utf8(cfg.encoding) or any(file_kind(p) != "parquet" for p in side_files):
        return
    if layout is not None and (layout.kind != "parquet" or layout.meta is not None):
        return
    _warn_once(
        f"data.encoding={cfg.encoding}",
        what,
        layout,
        "{given} is ignored: no text file is read (the log is {source}, with no text side table; Parquet is "
        "UTF-8 by definition, a Hub dataset is decoded by the datasets library); remove data.encoding",
    )


def _warn_if_path_unused(cfg: DataConfig, layout: Layout | None, what: str) -> None:
    """``data.path`` set while ``data.format`` is synthetic (the default) or hub: the file is not read and
    the run trains on other data, said only by the "data: synthetic (...)" line. A warning, not an error:
    ``--set data.format=synthetic`` on a config that names real data is the documented offline smoke run."""
    if cfg.path is None or cfg.format not in ("synthetic", "hub"):
        return
    read = (
        "data.format is synthetic (the default), so generated data is read"
        if cfg.format == "synthetic"
        else f"data.format is hub, so the Hub dataset data.name={cfg.name!r} is read"
    )
    _warn_once(
        f"data.path={cfg.path!r}",
        what,
        layout,
        "{given} is ignored: " + read + ", not the file; set data.format=auto (or the file's format) to "
        "read it",
    )


def _warn_if_header_unused(cfg: DataConfig, layout: Layout | None, what: str) -> None:
    """``data.header=false`` / ``data.columns`` describe a csv/tsv log only (side tables always have a
    header): set for another format they would be ignored without a word, and a user who meant
    ``data.columns`` to rename a Parquet file's columns would not know why a column is "not found"."""
    if cfg.header and not cfg.columns or what in ("csv", "tsv"):
        return
    _warn_once(
        "data.header=false" + (f" and data.columns={list(cfg.columns)}" if cfg.columns else ""),
        what,
        layout,
        "{given} ignored: {source} names its own columns (these describe csv/tsv files without a header "
        "line); name the columns to read with data.user_col, data.item_col, data.time_col",
    )
