"""`metarec export --fuse` / `--choose-adaptation` of a checkpoint folder copied out of its run folder chose
on validation users read from the current folder only ("data.path: log.csv not found", exit 2), although the
checkpoint records the folder its data was read from and `metarec evaluate` of the same copy found it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dc18_data_checks import relative_log_project  # noqa: E402

from metarec_dist import checkpoint as ckpt  # noqa: E402
from metarec_dist.cli import main  # noqa: E402


@pytest.mark.parametrize("flag", ["--fuse", "--choose-adaptation"])
def test_a_copied_checkpoint_exports_choosing_on_its_own_data(tmp_path, monkeypatch, capsys, flag):
    from metarec_dist.train.launch import train_local

    _, elsewhere, cfg = relative_log_project(tmp_path, monkeypatch, "runs", "a")
    out = train_local(cfg)
    shutil.copytree(out["checkpoint"], elsewhere / "ckpt")  # no run folder (metarec_run.json) around it
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    code = main(["export", "--checkpoint", "ckpt", "--out", "exp", flag])
    assert code == 0, capsys.readouterr().err  # before: "data.path: log.csv not found" (exit 2)
    meta = json.loads((elsewhere / "exp" / ckpt.EXPORT_CONFIG).read_text())
    assert meta["fusion" if flag == "--fuse" else "adaptation"]["adaptation_selected_on"] == "valid"
