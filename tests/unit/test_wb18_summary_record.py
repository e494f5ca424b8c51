"""(For the lead, with summary-py.patch.) The summary names the W&B run the logging process recorded, not a
guess from the driver's environment."""

from __future__ import annotations

from metarec_dist.config import load_config


def test_the_summary_names_the_run_rank_0_recorded(tmp_path, monkeypatch):
    from metarec_dist.metrics.wandb_logger import run_id, write_record
    from metarec_dist.run_folder import run_path, storage_root
    from metarec_dist.train.summary import format_summary

    cfg = load_config(
        None, [f"runtime.storage_path={tmp_path}", "runtime.run_name=wb18", "logging.wandb=auto"]
    )
    rid = run_id("wb18", storage_root(cfg.runtime))
    monkeypatch.setenv("WANDB_PROJECT", "driver-env")  # the driver's; rank 0 logged online to worker-env
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # the driver would guess "offline"
    record = {"entity": "team", "project": "worker-env", "id": rid, "mode": "online"}
    ray_result = {"step": 2, "run_path": run_path(cfg.runtime), "wandb": record}
    assert f"W&B run:    team/worker-env/{rid} (online)" in format_summary(ray_result, cfg)
    write_record(tmp_path / "wb18", record)  # a local run: read from the run folder
    local_result = {"step": 2, "run_path": run_path(cfg.runtime)}
    assert f"W&B run:    team/worker-env/{rid} (online)" in format_summary(local_result, cfg)
