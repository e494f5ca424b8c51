"""``train --json`` and ``bench ... --json``: a target the final write cannot use fails before the work, in
one line naming --json and the path. The old check read permission bits, which say yes to root in /proc
and /sys: the run or the benchmark went through and its result was then lost; a device (/dev/null) passed
too, and the atomic rename would have replaced it; a parent that is a file was "does not exist"."""

from __future__ import annotations

import errno
import json
import tempfile
from pathlib import Path

import pytest
from trained import train_args

from metarec_dist import cli, errors
from metarec_dist.cli import main


@pytest.fixture
def no_work(monkeypatch):
    """The benchmark and the training raise if reached: every case here must fail before them."""

    def reached(*args, **kwargs):
        raise AssertionError("the work ran before --json was refused")

    monkeypatch.setattr(cli, "_bench_result", reached)
    from metarec_dist.train import launch

    monkeypatch.setattr(launch, "train", reached)


@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """A folder where creating a file fails with EROFS, as on a read-only mount (root writes in a chmod 555
    folder, so the refusal is simulated where the write would meet it)."""
    locked = tmp_path / "ro"
    locked.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == locked:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return locked


def _bad_targets(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """case -> (--json value, what the error says)."""
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder").mkdir()
    blocked = f"{tmp_path / 'a-file'} is a file, not a folder"
    return {
        "proc": ("/proc/x.json", "cannot create files in /proc"),
        "folder": (str(tmp_path / "a-folder"), "is a folder; give a file name"),
        "parent is a file": (str(tmp_path / "a-file" / "x.json"), blocked),
        "grandparent is a file": (str(tmp_path / "a-file" / "d" / "x.json"), blocked),
        "device": ("/dev/null", "is not a plain file"),
    }


CASES = ["proc", "folder", "parent is a file", "grandparent is a file", "device"]


def _fails_naming(capsys, argv: list[str], target: str, says: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --json {target}: ") and says in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("case", CASES)
def test_bench_refuses_a_json_target_before_the_benchmark(case, tmp_path, capsys, no_work):
    target, says = _bad_targets(tmp_path)[case]
    _fails_naming(capsys, ["bench", "data", "--interactions", "1000", "--json", target], target, says)


@pytest.mark.parametrize("case", CASES)
def test_train_refuses_a_json_target_before_training(case, tmp_path, capsys, no_work):
    target, says = _bad_targets(tmp_path)[case]
    _fails_naming(capsys, [*train_args(tmp_path, "x"), "--json", target], target, says)
    assert not (tmp_path / "x").exists()


def test_a_read_only_folder_is_refused_even_for_root(read_only, tmp_path, capsys, no_work):
    """Root writes in a chmod 555 folder, so the refusal (a read-only mount, EROFS) is simulated where the
    write would meet it: creating a file in that folder."""
    locked = read_only
    target = str(locked / "r.json")
    _fails_naming(capsys, ["bench", "data", "--json", target], target, "(Read-only file system)")
    _fails_naming(capsys, [*train_args(tmp_path, "x"), "--json", target], target, f"files in {locked}")


def test_the_probe_leaves_nothing_and_a_link_keeps_pointing_at_the_result(tmp_path, capsys):
    result = tmp_path / "result.json"
    link = tmp_path / "link.json"
    link.symlink_to(result.name)
    assert errors.check_writable_file(link, "--json") == result
    assert list(tmp_path.iterdir()) == [link]  # no probe left behind
    assert main(["bench", "data", "--interactions", "1000", "--json", str(link)]) == 0
    assert link.is_symlink() and json.loads(result.read_text())["bench"] == "data"


def test_json_does_not_replace_a_file_of_another_kind(tmp_path, capsys, no_work):
    """``--json configs/tiny.yaml`` (or a data file, an export's config) was replaced by the result."""
    config = tmp_path / "my.yaml"
    config.write_text("model:\n  hidden_size: 16\n")
    for argv, command in (
        (["bench", "data", "--json", str(config)], "bench"),
        ([*train_args(tmp_path, "x"), "--json", str(config)], "train"),
    ):
        says = f"exists and is not a `metarec {command}` result, so it would be replaced"
        _fails_naming(capsys, argv, str(config), says)
    assert config.read_text() == "model:\n  hidden_size: 16\n"
    assert not (tmp_path / "x").exists()


def test_json_rewrites_an_earlier_result_or_an_empty_file(tmp_path):
    earlier, empty = tmp_path / "earlier.json", tmp_path / "empty.json"
    earlier.write_text(json.dumps({"bench": "scale", "command": "metarec bench scale"}))
    empty.write_text("")
    for target in (earlier, empty):
        assert main(["bench", "data", "--interactions", "1000", "--json", str(target)]) == 0
        assert json.loads(target.read_text())["bench"] == "data"


def test_json_creates_missing_folders_as_evaluate_does(tmp_path, capsys):
    """``train --json`` and ``bench --json`` refused a file in a missing folder ("create it first") while
    ``evaluate --json`` created it: all three create it now (the write is atomic)."""
    bench = tmp_path / "out" / "bench" / "b.json"
    assert main(["bench", "data", "--interactions", "1000", "--json", str(bench)]) == 0
    assert json.loads(bench.read_text())["bench"] == "data"
    trained = tmp_path / "out" / "train" / "deeper" / "t.json"
    assert main([*train_args(tmp_path, "x"), "--json", str(trained)]) == 0
    assert json.loads(trained.read_text())["step"] == 2


def test_missing_folders_under_a_read_only_one_are_refused(read_only, tmp_path, capsys, no_work):
    """The folder where the missing ones would be made is probed: a read-only one fails before the work."""
    locked = read_only
    target = str(locked / "a" / "b" / "r.json")
    _fails_naming(capsys, [*train_args(tmp_path, "x"), "--json", target], target, f"files in {locked}")
    assert not (locked / "a").exists()
