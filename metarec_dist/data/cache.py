"""On-disk cache of prepared data, so a second run is fast: the users as a folder of Parquet files
(``data/shards.py``, what Ray Data reads), the item ids and titles as Arrow, side information as npz.

Key: the input files' path, size and mtime plus every setting that changes the result. A cache entry
is written into a temp folder and renamed into place, so readers never see half of one; a failure to
write (read-only disk, full disk) only costs the speed-up and is logged.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from metarec_dist.data.config import DataConfig, is_utf8
from metarec_dist.data.features import EncodedFeature, FeatureTables
from metarec_dist.data.prepared import PreparedData
from metarec_dist.data.shards import UserShards, read_users, split_counts, write_users

log = logging.getLogger(__name__)

# Bump when preprocessing changes meaning, so old entries are not reused (3: NaN in a float feature is a
# missing value, ids spelt nan / None / null are refused; 4: "nan" in a token or token_seq feature is a
# missing value, not a category; 5: a quoted csv value after a blank, `1, "B1"`, is B1, not '"B1"').
CACHE_VERSION = 5
ENV_CACHE_DIR = "METAREC_CACHE_DIR"
# Settings that do not change the prepared data: where things live (the resolved files are keyed
# instead), whether to cache, and the synthetic generator (synthetic data is not cached).
_NOT_KEYED = {"path", "name", "data_dir", "cache", "cache_dir", "user_features_path", "item_features_path"}
# Keyed only when set, so that entries written before side information (or new items) existed stay valid.
_KEYED_WHEN_SET = {
    "user_features",
    "item_features",
    "new_item_frac",
    "user_features_sep",
    "item_features_sep",
    "user_features_columns",
    "item_features_columns",
}
_STALE_TMP_S = 24 * 3600


def cache_root(cfg: DataConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metarec" / "prepared"


def cache_key(files: list[Path], cfg: DataConfig) -> str:
    stamps = []
    for path in files:
        st = path.stat()
        stamps.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    settings = {
        k: v
        for k, v in dataclasses.asdict(cfg).items()
        if k not in _NOT_KEYED and not k.startswith("synthetic_") and (v or k not in _KEYED_WHEN_SET)
    }
    # data.encoding only when not UTF-8 (entries from before the key stay valid), by its codec's name.
    settings.pop("encoding", None)
    if not is_utf8(cfg.encoding):
        settings["encoding"] = codecs.lookup(cfg.encoding).name
    blob = json.dumps({"version": CACHE_VERSION, "files": stamps, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@contextmanager
def remembered_warnings() -> Iterator[list[str]]:
    """The warnings the data modules log inside the block (a side table covering few users, ...), for the
    cache entry: a later run that reads the entry instead of the files says them again."""
    said: list[str] = []

    class Remember(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    handler, data_log = Remember(logging.WARNING), logging.getLogger("metarec_dist.data")
    data_log.addHandler(handler)
    try:
        yield said
    finally:
        data_log.removeHandler(handler)


def repeat_warnings(root: Path, key: str) -> None:
    """Say again what reading the data of this entry warned about (see :func:`remembered_warnings`)."""
    try:
        said = json.loads((root / key / "meta.json").read_text(encoding="utf-8")).get("warnings") or []
    except (OSError, ValueError):
        return  # an entry locate/load could read a moment ago: nothing to repeat is the safe answer
    for message in said:
        log.warning("%s (said when this data was first read; cached in %s)", message, root / key)


def load(root: Path, key: str) -> PreparedData | None:
    """The whole entry, rows included (a one-process run trains from them)."""
    shards = locate(root, key)
    if shards is None:
        return None
    try:
        table = read_users(Path(shards.folder))
    except (OSError, ValueError) as exc:
        _drop(root / key, exc)
        return None
    log.info("loaded prepared data from cache %s", root / key)
    return PreparedData(
        # An explicit fingerprint: otherwise datasets hashes the whole table.
        datasets.Dataset(table, fingerprint=uuid.uuid4().hex),
        shards.num_items,
        shards.item_raw_ids,
        shards.item_titles,
        shards.source,
        shards.raw_stats,
        shards.features,
        new_items=shards.new_items,
    )


def locate(root: Path, key: str) -> UserShards | None:
    """The entry's user files and catalogue, without reading the rows (the Ray driver's view)."""
    entry = root / key
    if not (entry / "meta.json").is_file():
        return None
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        items = datasets.load_from_disk(str(entry / "items")).with_format("arrow")[:]
        features = _load_features(entry, meta.get("features"))
        if not any((entry / "users").glob("part-*.parquet")):
            raise FileNotFoundError(f"{entry / 'users'} has no part files")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _drop(entry, exc)
        return None
    raw_ids = items.column("raw_id").to_pylist()
    titles = None
    if meta.get("has_titles"):
        titles = {i + 1: t for i, t in enumerate(items.column("title").to_pylist()) if t is not None}
    return UserShards(
        folder=str(entry / "users"),
        num_items=meta["num_items"],
        item_raw_ids=raw_ids,
        item_titles=titles,
        source=meta["source"],
        split_users=meta["split_users"],
        raw_stats=meta["raw_stats"],
        features=features,
        new_items=None if meta.get("new_items") is None else np.asarray(meta["new_items"], dtype=np.int64),
    )


def _drop(entry: Path, exc: BaseException) -> None:
    # Corrupt (e.g. a disk error after it was written): drop it so this run's result replaces it.
    log.warning("ignoring unreadable data cache %s: %s", entry, exc)
    shutil.rmtree(entry, ignore_errors=True)


def save(prepared: PreparedData, root: Path, key: str, warnings: list[str] | None = None) -> None:
    tmp: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale(root)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{key}-"))
        tmp.chmod(0o755)  # mkdtemp makes it private; other users/jobs may share the cache
        titles = prepared.item_titles or {}
        items = pa.table(
            {
                "raw_id": pa.array(prepared.item_raw_ids, pa.string()),
                "title": pa.array([titles.get(i) for i in range(1, prepared.num_items + 1)], pa.string()),
            }
        )
        quiet = not datasets.utils.are_progress_bars_disabled()
        if quiet:
            datasets.disable_progress_bars()
        try:
            write_users(prepared.table(), tmp / "users")
            datasets.Dataset(items).save_to_disk(str(tmp / "items"))
        finally:
            if quiet:
                datasets.enable_progress_bars()
        meta = {
            "version": CACHE_VERSION,
            "num_items": prepared.num_items,
            "source": prepared.source,
            "raw_stats": prepared.raw_stats,
            "has_titles": prepared.item_titles is not None,
            "split_users": split_counts(prepared.table()),
            "features": _save_features(prepared.features, tmp),
            "new_items": None if prepared.new_items is None else prepared.new_items.tolist(),
            "warnings": warnings or [],
        }
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        try:
            os.replace(tmp, root / key)
        except OSError:
            if not (root / key / "meta.json").is_file():
                raise
            # Another process cached the same key first; keep theirs.
        else:
            tmp = None
            log.info("cached prepared data in %s", root / key)
    except OSError as exc:
        log.warning("could not cache prepared data in %s: %s", root, exc)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _save_features(tables: FeatureTables | None, folder: Path) -> dict | None:
    """Id arrays into features.npz (no pickles), titles and vocabularies into the returned meta."""
    if tables is None:
        return None
    arrays, described = {}, {}
    for entity in ("user", "item"):
        for name, f in getattr(tables, entity).items():
            key = f"{entity}/{name}"
            info = {k: v for k, v in dataclasses.asdict(f).items() if k != "values"}
            if f.kind == "title":
                info["texts"] = f.values.tolist()
            else:
                arrays[key] = f.values
            described[key] = info
    with open(folder / "features.npz", "wb") as out:
        np.savez(out, **arrays)
    return described


def _load_features(entry: Path, described: dict | None) -> FeatureTables | None:
    if described is None:
        return None
    tables = FeatureTables()
    with np.load(entry / "features.npz", allow_pickle=False) as arrays:
        for key, info in described.items():
            entity, name = key.split("/", 1)
            texts = info.pop("texts", None)
            values = np.array(texts, dtype=object) if texts is not None else arrays[key]
            getattr(tables, entity)[name] = EncodedFeature(values=values, **info)
    return tables


def _remove_stale(root: Path) -> None:
    """Temp folders of runs that were killed mid-write: safe to delete once they are old."""
    now = time.time()
    for path in root.glob(".tmp-*"):
        try:
            if now - path.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
