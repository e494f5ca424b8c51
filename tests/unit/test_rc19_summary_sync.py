"""Session 19: with cloud storage the summary had no `wandb sync` line for an offline run (its files are on
the node worker 0 ran on, not in a local run folder); it now names the folder worker 0 recorded."""

from __future__ import annotations

from metarec_dist.config import load_config
from metarec_dist.train.summary import wandb_lines


def test_cloud_offline_run_names_worker_zeros_sync_folder():
    cfg = load_config(None, ["logging.wandb=offline", "runtime.storage_path=s3://bucket/runs"])
    used = {
        "entity": "me",
        "project": "p",
        "id": "r-1",
        "mode": "offline",
        "sync_dir": "/tmp/w/offline-run-x",
    }
    lines = wandb_lines(cfg, "s3://bucket/runs/metarec", used)
    assert lines[-1] == "W&B sync:   wandb sync /tmp/w/offline-run-x (on the node worker 0 ran on)"
    assert not any(
        "sync" in line for line in wandb_lines(cfg, "s3://bucket/runs/metarec", {**used, "sync_dir": None})
    )
