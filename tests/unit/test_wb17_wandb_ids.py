"""The W&B run named by ``metarec train``'s summary and stored with every checkpoint is the one the logger
actually logs to (W&B offline, tiny local runs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from metarec_dist.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trained import local_config  # noqa: E402
from wandb_reader import PINNED_WANDB, read_run_when  # noqa: E402

ENV_PROJECT = "wb17-from-env"


def _cfg(tmp_path: Path, *extra: str):
    return local_config(
        tmp_path, "wb17", "logging.wandb=offline", "logging.project=wb17-config-project", *extra
    )


def _saved_run_id(run: Path, step: int) -> str | None:
    state = json.loads((run / "checkpoints" / f"step_{step:06d}" / "client_state.json").read_text())
    return state["train_state"]["wandb_run_id"]


def _logged_runs(run: Path) -> list[dict]:
    files = sorted(run.glob("wandb/offline-run-*/run-*.wandb"))
    return [read_run_when(f, lambda r: r["run_id"] is not None) for f in files]


def test_checkpoints_and_summary_name_the_wandb_run_that_is_logged_to(tmp_path, monkeypatch):
    import wandb

    from metarec_dist.train.launch import train_local
    from metarec_dist.train.summary import format_summary

    if wandb.__version__ != PINNED_WANDB:
        pytest.skip(f"the .wandb reader is written for wandb {PINNED_WANDB}")
    monkeypatch.setenv("WANDB_PROJECT", ENV_PROJECT)  # W&B's own variable wins over logging.project
    cfg = _cfg(tmp_path, "train.meta_steps=2", "checkpoint.every=2")
    result = train_local(cfg)
    run = tmp_path / "wb17"
    (logged,) = _logged_runs(run)
    rid = logged["run_id"]
    assert logged["project"] == ENV_PROJECT
    assert _saved_run_id(run, 2) == rid
    summary = format_summary(result, cfg)
    assert f"/{ENV_PROJECT}/{rid} (offline)" in summary, summary

    resumed = train_local(_cfg(tmp_path, "train.meta_steps=4", "checkpoint.every=2"))
    assert resumed["resumed_from"] == 2
    assert {r["run_id"] for r in _logged_runs(run)} == {rid}  # the resumed run logs to the same W&B run
    assert _saved_run_id(run, 4) == rid


def test_checkpoints_store_no_wandb_run_id_with_wandb_off(tmp_path):
    from metarec_dist.train.launch import train_local

    train_local(_cfg(tmp_path, "train.meta_steps=2", "checkpoint.every=2", "logging.wandb=off"))
    assert _saved_run_id(tmp_path / "wb17", 2) is None
    assert not (tmp_path / "wb17" / "wandb").exists()


def test_summary_names_the_ray_workers_wandb_run_with_cloud_storage(monkeypatch):
    """runtime.storage_path=s3://...: the summary named run x-d1396aa0 (``Path`` made the URI s3:/bucket/...)
    while the worker logged to x-82a2b656."""
    from metarec_dist.metrics import loggers, wandb_logger
    from metarec_dist.run_folder import run_path, storage_root
    from metarec_dist.train.summary import wandb_lines

    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    started: dict[str, str] = {}

    class FakeWandb:
        def __init__(self, project, entity, run_name, run_id, *args, **kwargs) -> None:
            started.update(project=wandb_logger.project_name(project), run_id=run_id)

        def log(self, metrics, step) -> None:
            return None

        def close(self) -> None:
            return None

    monkeypatch.setattr(wandb_logger, "WandbLogger", FakeWandb)
    cfg = load_config(
        None, ["runtime.storage_path=s3://bucket/runs", "runtime.run_name=x", "logging.wandb=offline"]
    )
    # As the Ray worker (runtime/ray_worker.py) builds its logger.
    loggers.build_logger(cfg.logging, cfg.runtime.run_name, storage_root(cfg.runtime), {}, True)
    (line,) = wandb_lines(cfg, run_path(cfg.runtime))
    assert f"/{started['project']}/{started['run_id']} (offline)" in line, (line, started)
    assert started["run_id"] == "x-82a2b656"


def test_a_moved_run_folder_says_its_resume_logs_to_another_wandb_run(tmp_path, caplog):
    """The W&B run id follows the storage path: a run folder moved elsewhere and resumed logs to a new W&B
    run, which is said (the checkpoints then name the new one)."""
    import shutil

    from metarec_dist.train.launch import train_local

    train_local(_cfg(tmp_path / "a", "train.meta_steps=2", "checkpoint.every=2"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    old = _saved_run_id(tmp_path / "b" / "wb17", 2)
    with caplog.at_level("WARNING", logger="metarec"):
        train_local(_cfg(tmp_path / "b", "train.meta_steps=4", "checkpoint.every=2"))
    new = _saved_run_id(tmp_path / "b" / "wb17", 4)
    assert old and new and old != new
    assert f"logged to W&B run {old}; this run logs to a new W&B run {new}" in caplog.text, caplog.text
