"""A re-run that trains nothing starts no W&B run: a refused resume (another model size) and a re-run of a
finished run each added an ``offline-run-*`` folder (one run folder reached 9), which the summary's
``wandb sync`` line then listed; the refused one logged the refused config. (A real resume logging to the
same W&B run: test_wb17_wandb_ids.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from metarec_dist.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trained import local_config  # noqa: E402

STEPS = ("train.meta_steps=2", "checkpoint.every=2", "logging.wandb=offline")


def _offline_runs(run: Path) -> list[Path]:
    return sorted(run.glob("wandb/offline-run-*"))


def _set_aside_wandb(run: Path) -> None:
    """The first run's W&B files elsewhere: a re-run in the same second would reuse its folder name."""
    (run / "wandb").rename(run / "wandb-first")


def test_a_refused_or_finished_rerun_starts_no_wandb_run(tmp_path, monkeypatch):
    from metarec_dist.train.launch import train_local
    from metarec_dist.train.summary import format_summary

    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = local_config(tmp_path, "rz19", *STEPS)
    train_local(cfg)
    run = tmp_path / "rz19"
    assert len(_offline_runs(run)) == 1
    _set_aside_wandb(run)

    with pytest.raises(UserError, match="model.hidden_size"):
        train_local(local_config(tmp_path, "rz19", *STEPS, "model.hidden_size=32"))
    assert _offline_runs(run) == []

    finished = train_local(cfg)
    assert finished["resumed_from"] == 2
    assert _offline_runs(run) == []
    assert "wandb sync" not in format_summary(finished, cfg)  # nothing new to sync from this folder


def test_a_deferred_wandb_run_names_no_run_until_started(monkeypatch):
    """Before ``start_wandb`` the logger names no W&B run (the checkpoints and Ray reports carry none)."""
    from types import SimpleNamespace

    from metarec_dist.metrics import loggers, wandb_logger
    from metarec_dist.runtime.ray_worker import wandb_record

    started: list[str] = []

    class FakeWandb:
        def __init__(self, project, entity, run_name, run_id, *args, **kwargs) -> None:
            started.append(run_id)
            self.wandb_run_id, self.record = run_id, {"id": run_id}
            self.logged: list[int] = []

        def log(self, metrics, step) -> None:
            self.logged.append(step)

        def close(self) -> None:
            return None

    monkeypatch.setattr(wandb_logger, "WandbLogger", FakeWandb)
    cfg = SimpleNamespace(wandb="offline", project="p", entity=None, verbose=False)
    logger = loggers.build_logger(cfg, "rz19", "/runs", {}, True, defer_wandb=True)
    logger.log({"loss": 1.0}, 1)
    assert (started, loggers.wandb_run_id(logger), wandb_record(logger)) == ([], None, None)
    loggers.start_wandb(logger)
    loggers.start_wandb(logger)  # once
    logger.log({"loss": 1.0}, 2)
    (rid,) = started
    assert loggers.wandb_run_id(logger) == rid and wandb_record(logger) == {"id": rid}
    assert logger.loggers[-1].logger.logged == [2]
    logger.close()
