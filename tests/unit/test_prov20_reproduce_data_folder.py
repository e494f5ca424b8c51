"""Session 20: runs trained by ``python -m metarec_dist.eval.reproduce`` record the folder their relative data
files were read from (``run_folder.RUN_INFO``), as `metarec train`'s do: reproduce trained without the run
lock that writes it, so `metarec evaluate` of such a run from another folder failed with "data.path
log.csv: not found". They now also hold the run lock while they train."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dc18_data_checks import SMALL, _write_log  # noqa: E402

from metarec_dist.cli import main  # noqa: E402
from metarec_dist.config import load_config  # noqa: E402
from metarec_dist.run_folder import LOCK_FILE, recorded_data_folder  # noqa: E402


def test_a_reproduce_run_records_its_data_folder_and_evaluates_from_elsewhere(tmp_path, monkeypatch, capsys):
    from metarec_dist.eval.reproduce import train_one

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    _write_log(project / "log.csv")
    monkeypatch.chdir(project)
    sets = ["data.path=log.csv", "data.format=csv", "data.string_ids=true", "data.cache=false"]
    cfg = load_config(None, [*SMALL, *sets, "runtime.storage_path=out/runs", "runtime.run_name=m-s0"])
    checkpoint = str((project / train_one(cfg, project / "out" / "runs" / "m-s0")).resolve())
    run = project / "out" / "runs" / "m-s0"
    assert recorded_data_folder(run) == project.resolve()  # before: None (no metarec_run.json)
    assert (run / LOCK_FILE).is_file()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    code = main(["evaluate", "--checkpoint", checkpoint, "--shots", "1", "--n-boot", "5", "--steps", "0"])
    assert code == 0, capsys.readouterr().err  # before: "data.path log.csv: not found" (exit 2)
