"""``runtime.deepspeed_override`` on Ray: the workers never open the driver's path (a file on the driver's
machine only), but a copy in the run folder, which every node reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metarec_dist.config import load_config
from metarec_dist.errors import UserError

ZERO = {"zero_optimization": {"stage": 2, "overlap_comm": False}}


def _cfg(storage: str, override: Path) -> object:
    return load_config(
        None,
        [
            "runtime.backend=ray",
            f"runtime.storage_path={storage}",
            "runtime.run_name=wb18",
            f"runtime.deepspeed_override={override}",
        ],
    )


def _sent_config(monkeypatch, cfg) -> object:
    """The config ``train_on_ray`` hands on (``build_trainer`` sends it to the workers)."""
    from metarec_dist.runtime import ray_launcher

    sent = {}
    monkeypatch.setattr(ray_launcher, "_train_on_ray", lambda c, verbose: sent.setdefault("cfg", c))
    ray_launcher.train_on_ray(cfg)
    return sent["cfg"]


def test_workers_read_a_copy_in_the_run_folder_not_the_drivers_path(tmp_path, monkeypatch):
    from metarec_dist.runtime.deepspeed_engine import read_override

    driver_file = tmp_path / "driver-only" / "zero2.json"
    driver_file.parent.mkdir()
    driver_file.write_text(json.dumps(ZERO))
    sent = _sent_config(monkeypatch, _cfg(str(tmp_path / "runs"), driver_file))
    copy = tmp_path / "runs" / "wb18" / "deepspeed_override.json"
    assert sent.runtime.deepspeed_override == str(copy)
    driver_file.unlink()  # a worker on another node: no file at the driver's path
    assert read_override(sent.runtime.deepspeed_override) == ZERO
    # The next session sends the same path: the checkpoints' recorded setting does not change on a resume.
    driver_file.write_text(json.dumps(ZERO))
    again = _sent_config(monkeypatch, _cfg(str(tmp_path / "runs"), driver_file))
    assert again.runtime.deepspeed_override == str(copy)


def test_a_broken_override_fails_on_the_driver_before_ray_starts(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(ZERO))
    cfg = _cfg(str(tmp_path / "runs"), bad)
    bad.write_text("[1, 2]")  # changed after the config was loaded
    with pytest.raises(UserError, match=r"deepspeed_override .*bad.json: not a JSON object"):
        _sent_config(monkeypatch, cfg)
    assert not (tmp_path / "runs" / "wb18" / "deepspeed_override.json").exists()


def test_cloud_storage_keeps_the_path_and_says_every_node_needs_it(tmp_path, monkeypatch, caplog):
    driver_file = tmp_path / "zero2.json"
    driver_file.write_text(json.dumps(ZERO))
    with caplog.at_level("WARNING", logger="metarec"):
        sent = _sent_config(monkeypatch, _cfg("s3://bucket/runs", driver_file))
    assert sent.runtime.deepspeed_override == str(driver_file)
    assert "every node must have this file" in caplog.text
