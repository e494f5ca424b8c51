"""(With the eval/loading.py patch.) `metarec evaluate` / `recommend` of a checkpoint folder copied out of
its run folder read relative data files from the current folder only ("data.path: log.csv not found"):
they now use the folder the checkpoint itself records."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dc18_data_checks import relative_log_project  # noqa: E402

from metarec_dist.cli import main  # noqa: E402


def test_a_copied_checkpoint_is_evaluated_and_recommends_from_elsewhere(tmp_path, monkeypatch, capsys):
    from metarec_dist.train.launch import train_local

    project, elsewhere, cfg = relative_log_project(tmp_path, monkeypatch, "runs", "a")
    out = train_local(cfg)
    shutil.copytree(out["checkpoint"], elsewhere / "ckpt")
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    code = main(["evaluate", "--checkpoint", "ckpt", "--shots", "1", "--n-boot", "5", "--steps", "0"])
    assert code == 0, capsys.readouterr().err  # before: "data.path: log.csv not found" (exit 2)
