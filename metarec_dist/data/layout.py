"""Which file to read, in which format: MovieLens/RecBole recognition, and the dataset-name resolver."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metarec_dist.data.config import DataConfig
from metarec_dist.data.errors import DataError
from metarec_dist.data.fetch import ARCHIVES, canonical_name, default_data_dir, download
from metarec_dist.metrics.redact import redact_text

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


def format_suffix(path: Path) -> str:
    """The extension that names the format, lower case; a ``.gz`` after it is looked through (``log.csv.gz``
    is a gzip'd csv, which the text and JSON readers decompress)."""
    suffixes = [s.lower() for s in path.suffixes]
    return suffixes[-2] if len(suffixes) > 1 and suffixes[-1] == ".gz" else path.suffix.lower()


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
    """A ``*.inter`` file, or a folder holding one (``<folder>/<folder>.inter`` preferred)."""
    if path.is_file():
        if path.suffix != ".inter":
            raise DataError(f"{path}: a RecBole interaction file ends in .inter")
        inter = path
    else:
        found = sorted(path.glob("*.inter"))
        preferred = path / f"{path.name}.inter"
        if preferred in found:
            inter = preferred
        elif len(found) == 1:
            inter = found[0]
        elif not found:
            raise DataError(f"{path}: no RecBole *.inter file in this folder")
        else:
            names = ", ".join(f.name for f in found)
            raise DataError(f"{path}: several .inter files ({names}); set data.path to the one to use")
    item = inter.with_suffix(".item")
    return Layout("recbole", inter, item if item.is_file() else None)


def has_dataset(path: Path) -> bool:
    return path.is_dir() and (movielens_layout(path) is not None or any(path.glob("*.inter")))


def detect(path: Path) -> Layout:
    """format: auto -- MovieLens and RecBole layouts (file or folder), else the file extension."""
    layout = movielens_layout(path)
    if layout is not None:
        return layout
    if path.suffix == ".inter" or path.is_dir() and any(path.glob("*.inter")):
        return recbole_layout(path)
    kind = file_kind(path)
    if path.is_file() and kind is not None:
        return Layout(kind, path)
    what = "folder" if path.is_dir() else "file"
    raise DataError(
        f"{path}: cannot tell the format of this {what} (format auto knows MovieLens u.data / ratings.dat / "
        f"ratings.csv, RecBole *.inter and the extensions {', '.join(sorted(EXTENSIONS))}, also gzip'd "
        "as .csv.gz etc.); "
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


def find_or_download(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder holding dataset ``name`` under the data dir; downloads it when known and missing.

    Existing files win: ``<data_dir>/ml-100k/`` with either the GroupLens files (``u.data``) or a
    RecBole atomic layout (``ml-100k.inter``) is found without touching the network.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    key = canonical_name(name)
    folders = [name] + ([ARCHIVES[key].folder, key] if key in ARCHIVES else [])
    for folder in dict.fromkeys(folders):
        if has_dataset(root / folder):
            return root / folder
    if key not in ARCHIVES:
        raise DataError(
            f"dataset {name!r} not found in {root} (looked for {root / name} with MovieLens or RecBole "
            f"files); put the files there, set data.path, or use one of the downloadable names "
            f"{', '.join(ARCHIVES)}"
        )
    return download(key, root)
