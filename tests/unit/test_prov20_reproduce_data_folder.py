"""Session 20: runs trained by ``python -m metarec_dist.eval.reproduce`` record the folder their relative data
files were read from (``run_folder.RUN_INFO``), as `metarec train`'s do: reproduce trained without the run
lock that writes it, so `metarec evaluate` of such a run from another folder failed with "data.path
log.csv: not found". They now also hold the run lock while they train."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dc18_data_checks import SMALL, relative_log_project  # noqa: E402

from metarec_dist.cli import main  # noqa: E402
from metarec_dist.config import load_config  # noqa: E402
from metarec_dist.run_folder import LOCK_FILE, recorded_data_folder  # noqa: E402


def test_a_reproduce_run_records_its_data_folder_and_evaluates_from_elsewhere(tmp_path, monkeypatch, capsys):
    from metarec_dist.eval.reproduce import train_one

    project, elsewhere, cfg = relative_log_project(tmp_path, monkeypatch, "out/runs", "m-s0")
    checkpoint = str((project / train_one(cfg, project / "out" / "runs" / "m-s0")).resolve())
    run = project / "out" / "runs" / "m-s0"
    assert recorded_data_folder(run) == project.resolve()  # before: None (no metarec_run.json)
    assert (run / LOCK_FILE).is_file()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    code = main(["evaluate", "--checkpoint", checkpoint, "--shots", "1", "--n-boot", "5", "--steps", "0"])
    assert code == 0, capsys.readouterr().err  # before: "data.path log.csv: not found" (exit 2)


def test_a_run_folder_another_process_trains_in_is_refused_not_cleared(tmp_path):
    """A reproduction started twice (the first still training): the second cleared the first's run folder
    under it and trained in it too."""
    import pytest

    from metarec_dist.errors import UserError
    from metarec_dist.eval.reproduce import train_one
    from metarec_dist.run_folder import RunLock

    run = tmp_path / "runs" / "m-s0"
    cfg = load_config(None, [*SMALL, f"runtime.storage_path={run.parent}", "runtime.run_name=m-s0"])
    with RunLock(run):  # the other process's training
        (run / "checkpoints").mkdir()
        with pytest.raises(UserError, match=r"run folder .*m-s0 is in use by another metarec run"):
            train_one(cfg, run)
        assert (run / "checkpoints").is_dir()  # before: deleted


def test_reuse_runs_keeps_a_finished_first_stage_and_clears_the_rest(tmp_path):
    """clear_run_dir, now keeping the lock and data-folder record this process has just written."""
    from test_pretrain import stage1_file, two_stage_cfg

    from metarec_dist import checkpoint as ckpt
    from metarec_dist.eval.reproduce import train_one
    from metarec_dist.run_folder import RUN_INFO
    from metarec_dist.train.pretrain import stage_dir

    cfg = two_stage_cfg(tmp_path, stage1_file(tmp_path))
    run = tmp_path / "runs" / "two"
    train_one(cfg, run)
    first = ckpt.latest_complete(stage_dir(cfg))
    stamp = (first / ckpt.MANIFEST).stat().st_mtime_ns
    (run / "stray.txt").write_text("left by an earlier run")
    train_one(cfg, run, keep_first_stage=True)
    assert (first / ckpt.MANIFEST).stat().st_mtime_ns == stamp  # the first stage was not trained again
    assert not (run / "stray.txt").exists() and (run / RUN_INFO).is_file()
    train_one(cfg, run)  # without --reuse-runs: all of it anew
    assert (first / ckpt.MANIFEST).stat().st_mtime_ns != stamp
