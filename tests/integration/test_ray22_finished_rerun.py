"""Session 22 (ray22): re-running a finished Ray run started Ray Train (controller and workers; with the
cluster itself ~45-65 s on a busy 2-core machine) before a worker's resume said "already finished at
meta-step N ...; nothing to train". The driver now decides it from the run folder's checkpoint with the
trainer's own code (``trainer.finished_checkpoint_message``) before anything starts, and returns what the
Ray run returned: Ray's record of the checkpoint's metrics (read from the run folder), marked resumed.

One real Ray run (one worker, two steps) on the module's cluster; the re-runs must start no Ray Train run
(no new ``TrainController`` actor)."""

from __future__ import annotations

import logging
import shutil

import pytest
from trained import RAY_SMALL, TINY

from metarec_dist.checkpoint import latest_complete
from metarec_dist.config import load_config, with_overrides
from metarec_dist.errors import UserError
from metarec_dist.runtime.ray_launcher import finished_result
from metarec_dist.train import launch

pytestmark = pytest.mark.integration
SMALL = [*RAY_SMALL, "runtime.backend=ray", "runtime.num_workers=1"]


def train_controllers() -> int:
    """Ray Train runs started on the cluster so far (their controller actors, alive or dead)."""
    from ray._private.state import actors

    return sum(a["ActorClassName"] == "TrainController" for a in actors().values())


@pytest.fixture(scope="module")
def finished(ray_cluster, tmp_path_factory):
    cfg = load_config(TINY, [*SMALL, f"runtime.storage_path={tmp_path_factory.mktemp('ray22')}"])
    return cfg, launch.train(cfg)


def test_rerunning_a_finished_ray_run_starts_no_ray_train_run(finished, caplog):
    cfg, first = finished
    before = train_controllers()
    assert before >= 1  # the first run's: the count sees them
    with caplog.at_level(logging.WARNING, logger="metarec"):
        again = launch.train(cfg)
    assert train_controllers() == before, "the re-run started Ray Train"
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "already finished at meta-step 2 (all train.meta_steps done); nothing to train" in said
    assert again == {**first, "resumed_from": 2}  # the first run's result, as Ray recorded it


def test_steps_left_are_left_to_the_workers_and_changed_data_is_refused(finished):
    cfg, first = finished
    point = latest_complete(first["run_path"])
    assert finished_result(cfg, point, checked=False) is not None
    assert finished_result(with_overrides(cfg, ["train.meta_steps=4"]), point, checked=False) is None
    # A finished run's driver compares the training users with the checkpoint's as rank 0 would (rt24).
    with pytest.raises(UserError, match=r"its training data differs: .*data\.seed: 0 -> 5"):
        finished_result(with_overrides(cfg, ["data.seed=5"]), point, checked=False)
    with pytest.raises(UserError, match="model.hidden_size"):  # a shape change is refused, not "finished"
        finished_result(with_overrides(cfg, ["model.hidden_size=32"]), point, checked=False)


def test_a_damaged_finished_checkpoint_is_refused_not_reused(finished, tmp_path):
    cfg, first = finished
    shutil.copytree(first["run_path"], tmp_path / "r")
    point = latest_complete(tmp_path / "r")
    (point / "engine" / "latest").write_text("tampered")  # as a worker's load would find it
    moved = with_overrides(cfg, [f"runtime.storage_path={tmp_path}", "runtime.run_name=r"])
    with pytest.raises(UserError, match=r"engine/latest is truncated or changed"):
        finished_result(moved, point, checked=False)
