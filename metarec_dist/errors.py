"""The one exception type for user mistakes.

A ``UserError`` is something the user can fix (a bad config value, a damaged or missing file, an output
path that cannot be written); its message names the file, key or field and what to do. The CLI prints it as
one ``error:`` line (``--verbose`` adds the traceback); the Ray driver unwraps it from Ray's wrappers.

Why a ``ValueError`` subclass: the code base reported user mistakes as ``ValueError`` before this type
existed, and every ``except ValueError`` keeps working.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


class UserError(ValueError):
    """A mistake in the user's input or environment; the message says which file/key and what to do."""


def check_writable_file(path: str | Path, what: str) -> Path:
    """Fail now, not after a long run, when ``path`` cannot be written as a file (``what`` names the flag);
    the path to write to (links followed; missing folders are made when it is written). The nearest
    existing folder is probed as the atomic write will use it, by creating and removing a temp file there:
    permission bits say yes to root in ``/proc`` and ``/sys``, where the write then failed only after the
    work. A file in place must be a plain file: a rename over ``/dev/null`` or a link such as
    ``/dev/stdout`` would replace it."""
    path = Path(path).expanduser()
    named = f"{what} {path}"
    if path.is_dir():
        raise UserError(f"{named}: is a folder; give a file name")
    if path.exists() and not path.is_file():  # followed to its end: /dev/stdout's is a pipe or a terminal
        raise UserError(f"{named}: exists and is not a plain file (a device, a pipe); give a file name")
    target = path.resolve()
    probe_nearest(target, named)  # missing folders are created by the write (``atomic_write_text``)
    return target


def check_result_target(value: str, command: str, keys: tuple[str, ...], noun: str = "result") -> Path:
    """``--json``'s file (``check_writable_file``), and not a file of another kind the result would replace
    (a config, a data file, an export's metarec_config.json): only a missing or empty file, or an earlier
    ``noun`` of ``metarec command`` (a JSON object with ``keys``, :func:`is_json_result`), is written over."""
    path = check_writable_file(value, "--json")
    if path.exists() and path.stat().st_size and not is_json_result(path, keys):
        raise UserError(
            f"--json {value}: exists and is not a `metarec {command}` {noun}, so it would be replaced; "
            "choose another file name"
        )
    return path


def probe_nearest(target: Path, named: str) -> None:
    """Files can be created at ``target``, its missing folders made on the way: the nearest existing folder
    is probed (:func:`probe_folder`); a file in the way is named."""
    nearest = next((p for p in Path(target).expanduser().absolute().parents if p.exists()), None)
    if nearest is None:
        return
    if not nearest.is_dir():
        raise UserError(f"{named}: {nearest} is a file, not a folder")
    probe_folder(nearest, named)


def probe_folder(folder: Path, named: str) -> None:
    """Create and remove a temp file of our own in ``folder``, or a ``UserError`` naming ``named``:
    permission bits say yes to root in ``/proc``, ``/sys`` or on a read-only mount, where a write then
    fails only after the work."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".metarec-probe-", dir=folder)
    except OSError as exc:
        raise UserError(
            f"{named}: cannot create files in {folder} ({exc.strerror or exc}); choose a writable place"
        ) from None
    os.close(fd)
    os.unlink(probe)  # ours: made just above


RESULT_MAX_BYTES = 16 << 20  # a larger file is no result of ours (a data file): refused unread


def is_json_result(path: Path, keys: tuple[str, ...]) -> bool:
    """Whether ``path`` is a result an earlier ``--json`` of ours wrote (a JSON object with ``keys``), which
    a re-run may write over; anything else there (a config, an export's metarec_config.json) is not."""
    if path.stat().st_size > RESULT_MAX_BYTES:
        return False
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(doc, dict) and all(k in doc for k in keys)


def check_output_folder(path: str | Path, what: str) -> Path:
    """``path`` is, or can be created as, a folder: no file in the way at it or any parent."""
    path = Path(path).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"{what} {path}: {p} is a file, not a folder")
            if not _can_write(p):
                raise UserError(f"{what} {path}: {p} is not writable")
            return path
    return path


def _can_write(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def check_fits(
    count: int, bytes_each: int, what: str, needs: str, unit: str, available: int | None = None
) -> None:
    """Refuse ``count`` generated things of ``bytes_each`` (at least) that would not fit in the memory
    available now, in one line naming the option (``what``, e.g. ``--eval-users 1,000,000,000``), what
    needs it (``needs``: "the generated log alone needs") and the ``unit`` counted. ``available`` bytes,
    default /proc/meminfo's MemAvailable; not checked where that is unknown. Every size that makes data in
    memory (``metarec bench``'s generated logs, users and requests; a model's weights) is checked here,
    before any of it is made."""
    available = available_bytes() if available is None else available
    need = count * bytes_each
    if available is not None and need > available:
        raise UserError(
            f"{what}: {needs} {need / 2**30:,.1f} GiB of memory ({bytes_each} bytes per {unit}) and "
            f"{available / 2**30:,.1f} GiB are available; choose a smaller size"
        )


def available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), bytes; None elsewhere."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    kib = next((int(x.split()[1]) for x in lines if x.startswith("MemAvailable:")), None)
    return None if kib is None else kib * 1024
