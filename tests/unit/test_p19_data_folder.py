"""Session 19: a run trained with relative data files (`data.path: log.csv`) records the folder they were
read from (``run_folder.RUN_INFO``, copied into an export), and `metarec evaluate` / `export --fuse` find
them from there, from any folder: after the run folder was moved, with an absolute
`runtime.storage_path` (which the run folder's place says nothing about), and for an export evaluated
elsewhere. Before, each failed with "data.path: log.csv not found". A file found there that differs from
the training data is still refused."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dc18_data_checks import SMALL, _write_log  # noqa: E402

from metarec_dist import checkpoint as ckpt  # noqa: E402
from metarec_dist.cli import main  # noqa: E402
from metarec_dist.config import load_config  # noqa: E402
from metarec_dist.run_folder import DATA_FOLDER, RUN_INFO, recorded_data_folder  # noqa: E402
from metarec_dist.train.launch import train_local  # noqa: E402

EVALUATE = ["--shots", "1", "--n-boot", "5", "--steps", "0"]


def _train(project: Path, storage: str, monkeypatch) -> Path:
    """`metarec train` on ``project/log.csv``, given relative, run from ``project``: the run folder."""
    _write_log(project / "log.csv")
    monkeypatch.chdir(project)
    sets = ["data.path=log.csv", "data.format=csv", "data.string_ids=true", "data.cache=false"]
    cfg = load_config(None, [*SMALL, *sets, f"runtime.storage_path={storage}", "runtime.run_name=rel"])
    return Path(train_local(cfg)["run_path"])


def _evaluate(path: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["evaluate", "--checkpoint", str(path), *EVALUATE])
    return code, capsys.readouterr().err


def test_a_moved_run_folder_still_finds_its_relative_data(tmp_path, monkeypatch, capsys):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    run = _train(project, "runs", monkeypatch)
    assert recorded_data_folder(run) == project.resolve()
    moved = shutil.move(run, tmp_path / "archive" / "rel")  # the run folder's place no longer says
    monkeypatch.chdir(elsewhere)
    code, err = _evaluate(Path(moved), capsys)
    assert code == 0, err  # before: "data.path log.csv: not found" (exit 2)
    assert main(["export", "--checkpoint", str(moved), "--out", "exp", "--fuse"]) == 0
    assert (elsewhere / "exp" / ckpt.EXPORT_COOC).is_file()
    # The file found there is compared with the training data still: another log is refused.
    _write_log(project / "log.csv", rename={"i1": "i2", "i2": "i1"})
    code, err = _evaluate(Path(moved), capsys)
    assert code == 2 and "trained on other data" in err


def test_an_absolute_storage_path_finds_relative_data(tmp_path, monkeypatch, capsys):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    run = _train(project, str(tmp_path / "storage"), monkeypatch)
    assert run == tmp_path / "storage" / "rel"
    monkeypatch.chdir(elsewhere)
    code, err = _evaluate(run, capsys)
    assert code == 0, err  # before: "data.path log.csv: not found" (exit 2)
    assert main(["export", "--checkpoint", str(run), "--out", "exp", "--fuse"]) == 0  # before: exit 2 too
    assert (elsewhere / "exp" / ckpt.EXPORT_COOC).is_file()


def test_an_export_evaluated_elsewhere_finds_relative_data(tmp_path, monkeypatch, capsys):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    run = _train(project, "runs", monkeypatch)
    assert main(["export", "--checkpoint", str(run), "--out", "exp"]) == 0
    meta = json.loads((project / "exp" / ckpt.EXPORT_CONFIG).read_text())
    assert meta[DATA_FOLDER] == str(project.resolve())
    copy = shutil.copytree(project / "exp", elsewhere / "exp")  # an export travels without its run folder
    monkeypatch.chdir(elsewhere)
    code, err = _evaluate(Path(copy), capsys)
    assert code == 0, err  # before: "data.path log.csv: not found" (exit 2)
    _write_log(project / "log.csv", rename={"i1": "i2", "i2": "i1"})
    code, err = _evaluate(Path(copy), capsys)
    assert code == 2 and "trained on other data" in err


def test_a_damaged_record_is_ignored(tmp_path):
    (tmp_path / RUN_INFO).write_text("{not json")
    assert recorded_data_folder(tmp_path) is None
    (tmp_path / RUN_INFO).write_text(json.dumps({DATA_FOLDER: "relative/folder"}))
    assert recorded_data_folder(tmp_path) is None


def test_the_recorded_folder_comes_before_the_current_one(tmp_path, monkeypatch, capsys):
    """Another project's log.csv in the current folder is not taken for the training data (it was, and the
    model was refused) while the file training read is still where it was."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    run = _train(project, "runs", monkeypatch)
    _write_log(elsewhere / "log.csv", rename={"i1": "i2", "i2": "i1"})
    monkeypatch.chdir(elsewhere)
    code, err = _evaluate(run, capsys)
    assert code == 0, err
    (project / "log.csv").unlink()  # gone there: the current folder's is read, and refused as other data
    code, err = _evaluate(run, capsys)
    assert code == 2 and "trained on other data" in err and "log.csv" in err


def test_a_relative_data_dir_is_found_too(tmp_path, monkeypatch, capsys):
    """`data.name: mylog` under `data.data_dir: data` (a folder relative to the training folder): before,
    an evaluation elsewhere looked in its own ./data and said the dataset was not found."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data" / "mylog").mkdir(parents=True), elsewhere.mkdir()
    rows = _write_log(tmp_path / "log.csv").read_text().splitlines()[1:]
    inter = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
        r.replace(",", "\t") + "\n" for r in rows
    )
    (project / "data" / "mylog" / "mylog.inter").write_text(inter)
    monkeypatch.chdir(project)
    sets = [
        "data.name=mylog",
        "data.data_dir=data",
        "data.format=auto",
        "data.string_ids=true",
        "data.cache=false",
    ]
    cfg = load_config(None, [*SMALL, *sets, "runtime.storage_path=runs", "runtime.run_name=rel"])
    run = Path(train_local(cfg)["run_path"])
    monkeypatch.chdir(elsewhere)
    code, err = _evaluate(run, capsys)
    assert code == 0, err


def test_the_run_lock_records_the_folder_both_backends_train_from(tmp_path, monkeypatch):
    """train_local and the Ray driver (train_on_ray) both hold RunLock: the record is written there, in the
    process whose current folder relative data paths are read against (not in a Ray worker's own)."""
    from metarec_dist.run_folder import RunLock

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "x"
    with RunLock(run):
        assert recorded_data_folder(run) == tmp_path.resolve()
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # no temp file left
