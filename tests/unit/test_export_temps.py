"""A killed ``metarec export`` leaves its temp folders beside ``--out``; the next export to the same --out
removes those it made (its naming, this machine, the process gone) and nothing else."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from metarec_dist.checkpoint import EXPORT_CONFIG, EXPORT_WEIGHTS, remove_stale_export_temps


@pytest.fixture(scope="module")
def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _folder(path: Path, *files: str) -> Path:
    path.mkdir()
    for name in files:
        (path / name).write_text("x")
    return path


def _export(path: Path) -> Path:
    return _folder(path, EXPORT_CONFIG, EXPORT_WEIGHTS)


def _temp(out: Path, kind: str, pid: int, host: str | None = None) -> str:
    return f".{out.name}.{kind}-{host or socket.gethostname()}-{pid}-ab3_x9q"


def test_stale_temp_folders_of_a_killed_export_are_removed(tmp_path, dead_pid):
    out = _export(tmp_path / "model")
    half = _folder(tmp_path / _temp(out, "tmp", dead_pid), EXPORT_WEIGHTS)
    old = _export(tmp_path / _temp(out, "old", dead_pid))
    remove_stale_export_temps(out)
    assert not half.exists() and not old.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_nothing_we_did_not_make_or_of_a_live_process_is_touched(tmp_path, dead_pid):
    out = _export(tmp_path / "model")
    kept = [
        _folder(tmp_path / _temp(out, "tmp", os.getppid()), "a"),  # a running export
        _folder(tmp_path / _temp(out, "tmp", dead_pid, host="another-host"), "a"),  # shared file system
        _folder(tmp_path / f".model.{dead_pid}", "a"),  # not our naming
        _folder(tmp_path / f".model.tmp-{socket.gethostname()}-{dead_pid}", "a"),  # no random part
        _folder(tmp_path / _temp(tmp_path / "other", "tmp", dead_pid), "a"),  # another --out's
        _folder(tmp_path / ".model.abcd1234", "a"),  # an older version's temp: unknown creator, kept
    ]
    link = tmp_path / _temp(out, "tmp", dead_pid)
    link.symlink_to(_folder(tmp_path / "target", "precious"))
    remove_stale_export_temps(out)
    assert all(p.is_dir() and (p / "a").exists() for p in kept)
    assert link.is_symlink() and (tmp_path / "target" / "precious").exists()


def test_a_moved_aside_export_stays_until_out_is_a_whole_export(tmp_path, dead_pid):
    out = tmp_path / "model"  # killed between moving the old export aside and renaming the new one in
    old = _export(tmp_path / _temp(out, "old", dead_pid))
    remove_stale_export_temps(out)
    assert (old / EXPORT_WEIGHTS).exists()  # the only whole export there is
    _export(out)
    with_notes = _export(tmp_path / _temp(out, "old", dead_pid).replace("ab3", "cd4"))
    (with_notes / "notes.txt").write_text("mine")
    remove_stale_export_temps(out)
    assert not old.exists()
    assert (with_notes / "notes.txt").read_text() == "mine"  # not only an export's files: left
