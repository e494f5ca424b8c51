"""Run folders: where a run lives (``<storage_path>/<run_name>``, the folder Ray Train uses too) and the
lock that lets one run at a time write there. This module is the only place that works out the path.

Light on purpose (no torch): the CLI and the Ray driver import it before anything heavy.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from metarec_dist.errors import UserError

if TYPE_CHECKING:
    from metarec_dist.config import RuntimeConfig

log = logging.getLogger("metarec")

LOCK_FILE = ".metarec.lock"
# What a run folder records about the run: ``data_folder``, the folder its relative data files (``data.path:
# log.csv``) were read from, so that an evaluation finds them from anywhere, the run folder moved or not.
RUN_INFO = "metarec_run.json"
DATA_FOLDER = "data_folder"
# ``data_dir``: the folder ``data.name`` data sets were looked for in ($METAREC_DATA_DIR, else its default),
# which a checkpoint's config does not say: an evaluation with another METAREC_DATA_DIR read other data.
DATA_DIR = "data_dir"


def storage_root(runtime: RuntimeConfig) -> str:
    """``runtime.storage_path`` resolved: an absolute local path, or a cloud URI as given."""
    path = runtime.storage_path
    return path if "://" in path else str(Path(path).expanduser().resolve())


def run_path(runtime: RuntimeConfig) -> str:
    """The run folder (a path or URI): ``<storage_root>/<run_name>``, the folder Ray Train also uses."""
    return f"{storage_root(runtime).rstrip('/')}/{runtime.run_name}"


def local_run_dir(runtime: RuntimeConfig) -> Path | None:
    """The run folder on this machine's file system; None when the storage is a cloud URI."""
    path = run_path(runtime)
    return None if "://" in path else Path(path)


class RunLock:
    """An advisory lock on a run folder for the whole run: a second run with the same run name is refused
    with the holder's pid and host. ``flock`` is released by the kernel when its holder dies (kill -9
    included), so a lock file left behind is never stale; the file itself is left in place (removing a
    lock file races with a process that has just opened it)."""

    def __init__(self, run_dir: Path | None, record_data: bool = True) -> None:
        """``record_data``: record the data folder (:func:`record_data_folder`) once locked; False for a
        caller that records it itself once the data is read (``train_local``): a run that failed before
        (no data file in the current folder) replaced a good record with its folder."""
        self.run_dir, self.record_data = run_dir, record_data
        self.path = None if run_dir is None else Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        if self.path is None:
            log.info("cloud storage: no run-folder lock (two runs with the same run name are not stopped)")
            return self
        if self.path.parent.exists() and not self.path.parent.is_dir():  # was "[Errno 17] File exists"
            raise UserError(
                f"run folder {self.run_dir}: is a file, not a folder; choose another run name (--set "
                "runtime.run_name=NEW) or move the file away"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UserError(f"cannot create the run folder lock {self.path}: {exc}") from exc
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(self._in_use_message()) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise UserError(f"cannot lock the run folder {self.run_dir}: {exc}") from exc
            log.warning(
                "%s: this file system has no locks; two runs with one run name are not stopped", self.path
            )
            if self.record_data:
                record_data_folder(self.run_dir)
            return self
        os.ftruncate(fd, 0)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd
        if self.record_data:
            record_data_folder(self.run_dir)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def _in_use_message(self) -> str:
        try:
            holder = json.loads(self.path.read_text())
            who = f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            holder, who = {}, "a process that has not written its pid yet"
        gone = holder.get("host") == socket.gethostname() and not process_alive(int(holder.get("pid", 0)))
        note = f" (pid {holder.get('pid')} has exited; a process it started holds the lock)" if gone else ""
        return (
            f"run folder {self.run_dir} is in use by another metarec run ({who}){note}. Wait for it to "
            f"finish, or start this one under another name (--set runtime.run_name=NEW); "
            f"lock file: {self.path}"
        )


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one of another user counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def record_data_folder(run_dir: Path) -> None:
    """Record in ``run_dir`` (:data:`RUN_INFO`) the current folder, which the run's relative data files are
    read from (the data is read in this process, or on this machine by a Ray task started from here), and
    the data folder ``data.name`` sets are found in (:data:`DATA_DIR`, as this process resolves it). Not
    recorded (a warning): the evaluation then looks for the files as before the record existed."""
    from metarec_dist.data.fetch import default_data_dir

    path = Path(run_dir) / RUN_INFO
    temp = path.with_name(f".{RUN_INFO}.{os.getpid()}.tmp")
    try:
        info = {DATA_FOLDER: str(Path.cwd()), DATA_DIR: str(default_data_dir().absolute())}
        temp.write_text(json.dumps(info) + "\n", encoding="utf-8")
        os.replace(temp, path)
    except OSError as exc:  # the current folder deleted, a read-only run folder
        temp.unlink(missing_ok=True)
        log.warning("%s: could not record the folder relative data files are read from: %s", path, exc)


def recorded_data_folder(run_dir: Path, key: str = DATA_FOLDER) -> Path | None:
    """The folder :func:`record_data_folder` recorded in ``run_dir`` under ``key`` (:data:`DATA_FOLDER` or
    :data:`DATA_DIR`; None: a run from before the record, a cloud run folder, or a damaged record)."""
    try:
        value = json.loads((Path(run_dir) / RUN_INFO).read_text(encoding="utf-8"))[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Path(value) if isinstance(value, str) and Path(value).is_absolute() else None
