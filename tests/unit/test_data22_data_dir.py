"""Session 22 (data22): a ``data.name`` data set is read, at evaluation, from the data folder training found
it in.

A ``data.name`` set (``movielens-100k``) is found through $METAREC_DATA_DIR, which neither the checkpoint
nor its config recorded: evaluating (exporting with --fuse, recommending) with another METAREC_DATA_DIR
read that folder's copy instead: "trained on other data than movielens-100k now holds", or a download, or
other data that happened to pass. The run folder (``metarec_run.json``), each checkpoint and each export
now record the data folder (``data_dir``), and loading a model prefers it while it holds the set; gone,
the current one is read with a warning naming both. Runs from before the record read as they did.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from trained import SMALL

from metarec_dist import checkpoint as ckpt
from metarec_dist.cli import main
from metarec_dist.data import DataConfig
from metarec_dist.data.layout import with_recorded_data_dir
from metarec_dist.run_folder import DATA_DIR, RUN_INFO, recorded_data_folder

EVALUATE = ["--shots", "1", "--n-boot", "5", "--steps", "0"]


def _write_ml(root: Path, seed: int) -> Path:
    """``root/ml-100k/u.data``: 60 users over 30 items, as MovieLens-100K writes it; ``seed``: which."""
    folder = root / "ml-100k"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = [
        f"{u + 1}\t{i + 1}\t4\t{1000 * u + t}\n"
        for u in range(60)
        for t, i in enumerate(rng.choice(30, 8, replace=False))
    ]
    (folder / "u.data").write_text("".join(rows))
    return folder


@pytest.fixture
def named_run(tmp_path, monkeypatch):
    """A run trained on data.name=movielens-100k from the data folder ``A``; ``B`` holds other data."""
    from metarec_dist.config import load_config
    from metarec_dist.train.launch import train_local

    a, b = tmp_path / "A", tmp_path / "B"
    _write_ml(a, 0), _write_ml(b, 1)
    monkeypatch.setenv("METAREC_DATA_DIR", str(a))
    monkeypatch.chdir(tmp_path)
    sets = ["data.name=movielens-100k", "data.format=auto", "data.cache=false", "logging.wandb=off"]
    storage = [f"runtime.storage_path={tmp_path / 'runs'}", "runtime.run_name=named"]
    out = train_local(load_config(None, [*SMALL, *sets, *storage]))
    return Path(out["run_path"]), Path(out["checkpoint"]), a, b


def test_a_named_data_set_is_read_from_the_folder_training_found_it_in(named_run, monkeypatch, capsys):
    run, checkpoint, a, b = named_run
    assert recorded_data_folder(run, DATA_DIR) == a  # the run folder's record
    assert json.loads((checkpoint / ckpt.CLIENT_STATE).read_text())[DATA_DIR] == str(a)  # the checkpoint's
    monkeypatch.setenv("METAREC_DATA_DIR", str(b))
    capsys.readouterr()
    code = main(["evaluate", "--checkpoint", str(run), *EVALUATE])
    assert code == 0, capsys.readouterr().err  # before: "trained on other data than movielens-100k now holds"

    copy = run.parent / "copied-checkpoint"  # out of its run folder: the checkpoint's own record
    shutil.copytree(checkpoint, copy)
    assert main(["export", "--checkpoint", str(copy), "--out", str(run.parent / "exp")]) == 0
    assert json.loads((run.parent / "exp" / ckpt.EXPORT_CONFIG).read_text())[DATA_DIR] == str(a)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run.parent / "exp"), *EVALUATE]) == 0, (
        capsys.readouterr().err
    )


def test_the_recorded_folder_gone_the_current_one_is_read_with_a_warning_naming_both(
    named_run, monkeypatch, capsys, caplog
):
    run, _, a, b = named_run
    shutil.move(a, a.with_name("A-moved"))
    monkeypatch.setenv("METAREC_DATA_DIR", str(b))
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="metarec_dist.data.layout"):
        code = main(["evaluate", "--checkpoint", str(run), *EVALUATE])
    assert code != 0 and "trained on other data than movielens-100k" in capsys.readouterr().err
    warned = [r.getMessage() for r in caplog.records if "data.name=movielens-100k" in r.getMessage()]
    assert len(warned) == 1 and str(a) in warned[0] and f"reading {b / 'ml-100k'}" in warned[0]


@pytest.mark.parametrize(
    "settings",
    [
        {"path": "log.csv"},  # data.path: the data folder plays no part
        {"data_dir": "/somewhere"},  # set in the config: it wins
        {"format": "synthetic"},
    ],
)
def test_a_config_the_data_folder_plays_no_part_in_is_left_as_it_is(tmp_path, settings):
    cfg = DataConfig(**{"name": "movielens-100k", "format": "auto", **settings})
    assert with_recorded_data_dir(cfg, str(tmp_path)) is cfg


def test_a_model_from_before_the_record_reads_the_current_data_folder(tmp_path, monkeypatch):
    _write_ml(tmp_path / "A", 0)
    monkeypatch.setenv("METAREC_DATA_DIR", str(tmp_path / "B"))
    cfg = DataConfig(name="movielens-100k", format="auto")
    assert with_recorded_data_dir(cfg, None) is cfg  # no record: as before
    assert with_recorded_data_dir(cfg, str(tmp_path / "A")).data_dir == str(tmp_path / "A")
    run = tmp_path / "runs" / "old"
    folder = run / "checkpoints" / "step_000002"
    folder.mkdir(parents=True)
    (run / RUN_INFO).write_text(json.dumps({"data_folder": str(tmp_path)}))  # written before data_dir
    assert ckpt.checkpoint_data_folder(folder, {}, DATA_DIR) is None
