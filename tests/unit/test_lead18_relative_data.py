"""Session 18: a run trained with relative data files (`data.path: log.csv`) is evaluated and exported
with --fuse from another folder: the files are found from the folder training ran from, which the run
folder's place says (`<that>/<runtime.storage_path>/<run_name>`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dc18_data_checks import _fit, _write_log, relative_log_project  # noqa: E402

from metarec_dist.cli import main  # noqa: E402
from metarec_dist.eval.loading import training_folder  # noqa: E402


def test_relative_data_files_are_found_from_the_training_folder(tmp_path, monkeypatch, capsys):
    project, elsewhere, cfg = relative_log_project(tmp_path, monkeypatch, "runs/cold", "rel")
    _fit(cfg, Path("runs/cold/rel"))
    run = project / "runs" / "cold" / "rel"
    assert training_folder(cfg, run) == project
    assert training_folder(cfg, tmp_path / "moved" / "rel") is None  # a run folder moved: nothing guessed

    monkeypatch.chdir(elsewhere)  # before: "data.path: log.csv not found (... the current folder ...)"
    assert main(["evaluate", "--checkpoint", str(run), "--shots", "1", "--n-boot", "5", "--steps", "0"]) == 0
    assert main(["export", "--checkpoint", str(run), "--out", "exp", "--fuse"]) == 0, capsys.readouterr().err
    assert (elsewhere / "exp").is_dir() and not (elsewhere / "log.csv").exists()
    # The folder the checkpoint records (session 21: every checkpoint carries it) comes first: another
    # log.csv here is not read while the training folder still has its own ...
    _write_log(elsewhere / "log.csv", rename={"i1": "i2", "i2": "i1"})
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--shots", "1", "--n-boot", "5", "--steps", "0"]) == 0
    # ... and once that is gone, the one here is read, and refused as other data.
    (project / "log.csv").unlink()
    assert main(["evaluate", "--checkpoint", str(run), "--shots", "1", "--n-boot", "5", "--steps", "0"]) == 2
    assert "trained on other data" in capsys.readouterr().err
