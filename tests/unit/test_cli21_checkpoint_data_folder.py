"""A checkpoint carries the folder its relative data files were read from: only the run folder recorded it
(``metarec_run.json``), so a checkpoint folder copied out of its run folder (or one in cloud storage)
exported, evaluated and recommended from elsewhere failed with "data.path: log.csv not found", and nothing
said which data it was trained on."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dc18_data_checks import _write_log, relative_log_project  # noqa: E402

from metarec_dist import checkpoint as ckpt  # noqa: E402
from metarec_dist.cli import main  # noqa: E402
from metarec_dist.run_folder import DATA_FOLDER  # noqa: E402


def test_a_checkpoint_copied_out_of_its_run_folder_still_finds_its_data(tmp_path, monkeypatch, capsys):
    from metarec_dist.train.launch import train_local

    project, elsewhere, cfg = relative_log_project(tmp_path, monkeypatch, "runs", "a")
    out = train_local(cfg)
    client = json.loads((Path(out["checkpoint"]) / ckpt.CLIENT_STATE).read_text())
    assert client[DATA_FOLDER] == str(project.resolve())  # before: no such key

    copy = elsewhere / "ckpt"
    shutil.copytree(out["checkpoint"], copy)  # no run folder (metarec_run.json) around it
    monkeypatch.chdir(elsewhere)
    assert main(["export", "--checkpoint", str(copy), "--out", "exp"]) == 0
    meta = json.loads((elsewhere / "exp" / ckpt.EXPORT_CONFIG).read_text())
    assert meta[DATA_FOLDER] == str(project.resolve())  # before: missing
    capsys.readouterr()
    code = main(["evaluate", "--checkpoint", "exp", "--shots", "1", "--n-boot", "5", "--steps", "0"])
    assert code == 0, capsys.readouterr().err  # before: "data.path: log.csv not found" (exit 2)


def test_an_older_checkpoint_without_the_record_exports_its_run_folders(tmp_path, monkeypatch):
    """Checkpoints written before they carried it: the run folder's record, as before; none: no key."""
    run = tmp_path / "runs" / "a"
    folder = run / "checkpoints" / "step_000002"
    folder.mkdir(parents=True)
    assert ckpt.checkpoint_data_folder(folder, {}) is None
    (run / "metarec_run.json").write_text(json.dumps({DATA_FOLDER: str(tmp_path)}))
    assert ckpt.checkpoint_data_folder(folder, {}) == str(tmp_path)
    assert ckpt.checkpoint_data_folder(folder, {DATA_FOLDER: "/own"}) == "/own"


def test_a_run_that_fails_before_training_keeps_the_run_folders_record(tmp_path, monkeypatch, capsys):
    """`metarec train` of the same run from a folder without the data (a copied run folder, a wrong
    working folder) failed with "data.path: log.csv not found", yet had already replaced the run folder's
    record with that folder: evaluating the run from there then failed too."""
    from metarec_dist.config import with_overrides
    from metarec_dist.run_folder import recorded_data_folder
    from metarec_dist.train.launch import train_local

    project, elsewhere, cfg = relative_log_project(tmp_path, monkeypatch, str(tmp_path / "runs"), "a")
    out = train_local(cfg)
    run = Path(out["run_path"])
    assert recorded_data_folder(run) == project.resolve()
    monkeypatch.chdir(elsewhere)
    _write_log(elsewhere / "log.csv", rename={"i0": "i1", "i1": "i0"})  # other data
    with pytest.raises(ValueError, match="cannot resume"):
        train_local(with_overrides(cfg, ["train.meta_steps=3"]))
    (elsewhere / "log.csv").unlink()
    with pytest.raises(ValueError, match="log.csv"):
        train_local(with_overrides(cfg, ["train.meta_steps=3"]))
    assert recorded_data_folder(run) == project.resolve()  # before: elsewhere
    code = main(["evaluate", "--checkpoint", str(run), "--shots", "1", "--n-boot", "5", "--steps", "0"])
    assert code == 0, capsys.readouterr().err
