"""Session 19 (raycluster19): with cloud storage (``s3://``) the driver cannot read the run folder's
``.wandb-run.json``, and its summary guessed the W&B run from its own environment: a driver with
``WANDB_PROJECT=mine`` named ``mine`` while worker 0 (the node's ``ray start`` environment) logged to
``metarec-dist``. Rank 0 now reports its W&B record with its metrics, and the driver names that run."""

from __future__ import annotations

from metarec_dist.config import load_config
from metarec_dist.metrics.loggers import MultiLogger, NullLogger
from metarec_dist.metrics.wandb_logger import run_id
from metarec_dist.run_folder import storage_root
from metarec_dist.runtime.ray_launcher import wandb_used
from metarec_dist.runtime.ray_worker import WANDB_METRIC, wandb_record, with_wandb_record
from metarec_dist.train.summary import format_summary

CLOUD = ["runtime.storage_path=s3://bucket/runs", "runtime.run_name=cloudy", "logging.wandb=offline"]


class _Wandb:
    def __init__(self, record):
        self.record = record


def _record(cfg, project="metarec-dist"):
    rid = run_id(cfg.runtime.run_name, storage_root(cfg.runtime))
    return {"entity": None, "project": project, "id": rid, "mode": "offline", "sync_dir": "/x", "url": None}


def test_rank_0_reports_its_record_and_the_driver_names_that_run(monkeypatch):
    monkeypatch.setenv("WANDB_PROJECT", "mine")  # the driver's environment, not worker 0's
    cfg = load_config(None, CLOUD)
    record = _record(cfg)
    logger = MultiLogger(NullLogger(), _Wandb(record))
    reported = with_wandb_record({"step": 3.0}, wandb_record(logger))
    assert reported == {"step": 3.0, WANDB_METRIC: record}

    used = wandb_used(cfg, reported[WANDB_METRIC])
    assert used == {"wandb": record}
    summary = format_summary({"step": 3, "run_path": "s3://bucket/runs/cloudy", **used}, cfg)
    assert f"W&B run:    <default entity>/metarec-dist/{record['id']} (offline)" in summary
    assert "mine" not in summary


def test_without_w_and_b_nothing_is_added_and_another_runs_record_is_not_used(monkeypatch):
    cfg = load_config(None, CLOUD)
    assert with_wandb_record({"step": 1.0}, wandb_record(MultiLogger(NullLogger()))) == {"step": 1.0}
    moved = {**_record(cfg), "id": "cloudy-00000000"}  # Ray's record restored from a run folder moved here
    assert wandb_used(cfg, moved) == {}
    assert wandb_used(load_config(None, [*CLOUD, "logging.wandb=off"]), _record(cfg)) == {}
