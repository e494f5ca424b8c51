"""Fetch the official MovieLens zips, verify them, and unpack them into the data folder atomically.

Atomic: the zip is streamed to a temp file in the target folder, its sha256 checked, extracted into
a temp folder there, and only then moved into place with ``os.replace``; on any failure the temp
files are removed, so an interrupted or corrupt download never leaves a folder that looks complete.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from metarec_dist.data.errors import DataError

log = logging.getLogger(__name__)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"
ENV_DATA_DIR = "METAREC_DATA_DIR"


@dataclass(frozen=True)
class Archive:
    zip_name: str
    folder: str  # the zip's top-level folder, and the folder name under the data dir
    size: int


ARCHIVES: dict[str, Archive] = {
    "movielens-100k": Archive("ml-100k.zip", "ml-100k", 4_924_029),
    "movielens-1m": Archive("ml-1m.zip", "ml-1m", 5_917_549),
    "movielens-latest-small": Archive("ml-latest-small.zip", "ml-latest-small", 978_202),
}
ALIASES = {archive.folder: name for name, archive in ARCHIVES.items()}  # "ml-100k" -> "movielens-100k"

# Pinned sha256 of the official GroupLens zips (the same values TensorFlow Datasets pins in its
# url_checksums/movielens.txt). ml-latest-small is re-issued by GroupLens from time to time; when that
# happens the check fails with a message saying so, and `download(..., sha256={...})` accepts a new pin.
SHA256: dict[str, str] = {
    "movielens-100k": "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    "movielens-1m": "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    "movielens-latest-small": "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
}

_CHUNK = 1 << 20


def default_data_dir() -> Path:
    return Path(os.environ.get(ENV_DATA_DIR) or Path.home() / ".cache" / "metarec").expanduser()


def canonical_name(name: str) -> str:
    return ALIASES.get(name, name)


def download(
    name: str,
    data_dir: str | Path | None = None,
    *,
    base_url: str | None = None,
    sha256: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download and unpack dataset ``name`` into ``data_dir``; returns the unpacked folder.

    ``base_url`` and ``sha256`` (name -> hex digest) replace the GroupLens URL and the pinned digests;
    tests point them at a local server.
    """
    key = canonical_name(name)
    if key not in ARCHIVES:
        raise DataError(f"cannot download {name!r}: known datasets are {', '.join(ARCHIVES)}")
    archive = ARCHIVES[key]
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    target = root / archive.folder
    if target.is_dir() and any(target.iterdir()):
        return target
    pins = sha256 if sha256 is not None else SHA256
    expected = pins.get(key) or pins.get(name)
    if not expected:
        raise DataError(f"no sha256 pinned for {key!r}; pass sha256={{{key!r}: '<hex digest>'}}")
    url = f"{(base_url or GROUPLENS_URL).rstrip('/')}/{archive.zip_name}"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        file = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), None)
        why = f"{file} is a file, not a folder" if file is not None else str(exc)
        raise DataError(
            f"cannot create the data folder {root}: {why}; choose another data folder (--data-dir, "
            "data.data_dir or METAREC_DATA_DIR)"
        ) from None
    log.info("downloading %s from %s into %s", key, url, root)
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=f".{archive.zip_name}.", suffix=".part")
    tmp_zip = Path(tmp_name)
    tmp_dir: Path | None = None
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _fetch(url, out, key, root, archive, timeout)
        if digest != expected.lower():
            raise DataError(
                f"{url}: sha256 mismatch (expected {expected}, got {digest}); the download was discarded. "
                "Run again; if GroupLens re-issued the file, check it and pin the new digest with "
                "download(..., sha256={...}). " + _by_hand(key, root, archive)
            )
        tmp_dir = Path(tempfile.mkdtemp(dir=root, prefix=f".{archive.folder}."))
        tmp_dir.chmod(0o755)  # mkdtemp makes it private; the data folder is often shared
        _extract(tmp_zip, tmp_dir, url)
        inner = tmp_dir / archive.folder
        source = inner if inner.is_dir() else tmp_dir
        try:
            os.replace(source, target)
        except OSError:
            if not (target.is_dir() and any(target.iterdir())):
                raise
            # Another process finished the same download first; its copy is as good as ours.
        return target
    finally:
        tmp_zip.unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _fetch(url: str, out, key: str, root: Path, archive: Archive, timeout: float) -> str:
    """Stream ``url`` into ``out``; returns the sha256 hex digest. Every failure is a DataError."""
    hasher = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected_len = int(length) if length and length.isdigit() else None
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                hasher.update(chunk)
                received += len(chunk)
    except urllib.error.HTTPError as exc:
        raise DataError(
            f"cannot download {key}: {url} answered HTTP {exc.code} {exc.reason}. "
            + _by_hand(key, root, archive)
        ) from None
    except urllib.error.URLError as exc:
        raise DataError(
            f"cannot download {key}: {url} is unreachable ({exc.reason}); this machine looks offline. "
            + _by_hand(key, root, archive)
        ) from None
    except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
        raise DataError(
            f"cannot download {key}: the transfer from {url} was interrupted after {received:,} bytes "
            f"({exc.__class__.__name__}); run again. " + _by_hand(key, root, archive)
        ) from None
    if expected_len is not None and received != expected_len:
        raise DataError(
            f"cannot download {key}: the transfer from {url} was interrupted "
            f"({received:,} of {expected_len:,} bytes); run again. " + _by_hand(key, root, archive)
        )
    return hasher.hexdigest()


def _by_hand(key: str, root: Path, archive: Archive) -> str:
    return (
        f"To install it by hand, fetch {GROUPLENS_URL}/{archive.zip_name} on a machine with internet and "
        f"unzip it into {root} (giving {root / archive.folder}), or point {ENV_DATA_DIR} / data.path at a "
        "folder that has it. For an offline smoke test, run with --set data.format=synthetic."
    )


def _extract(zip_path: Path, dest: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            root = dest.resolve()
            for member in zf.namelist():
                # Refuse entries that would land outside the folder ("../x", absolute paths).
                if not (dest / member).resolve().is_relative_to(root):
                    raise DataError(f"{url}: unsafe path {member!r} in the zip; refusing to extract")
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{url}: not a valid zip file ({exc})") from None
