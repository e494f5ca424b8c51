"""Session 24 (rt24): runtime checks before Ray starts.

- ``runtime.gpus_per_worker`` above 1: a fraction (1.5) Ray refuses (GPU requests above 1 must be whole
  numbers), only once the cluster and the workers started; a whole number (2) reserved GPUs the worker
  never uses (it trains on one device). Now a config error at load time, naming what to set.
- A re-run of a finished Ray run with changed ``data.*`` settings started Ray (~45 s) only for the workers
  to refuse the other training data, or to say "already finished": now the driver says it, before Ray.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_ray22_resume_before_ray import _finished_on_a_file  # noqa: E402

from metarec_dist.config import load_config, with_overrides  # noqa: E402
from metarec_dist.errors import UserError  # noqa: E402
from metarec_dist.runtime import ray_launcher  # noqa: E402


def gpu_config(*extra: str):
    sets = ["runtime.backend=ray", "runtime.use_gpu=true", "runtime.num_workers=2"]
    return load_config("configs/tiny.yaml", [*sets, *extra])


def test_a_fraction_of_a_gpu_above_one_per_worker_is_a_config_error():
    with pytest.raises(UserError) as said:  # at load time: before Ray starts
        gpu_config("runtime.gpus_per_worker=1.5")
    text = str(said.value)
    assert "runtime.gpus_per_worker=1.5: Ray takes a fraction of a GPU only below 1" in text
    assert "set runtime.gpus_per_worker=1" in text and "\n" not in text


def test_several_whole_gpus_per_worker_are_refused_as_idle():
    """A worker trains on ``ray.train.torch.get_device()`` alone: the other GPUs Ray reserved for it idle."""
    with pytest.raises(UserError) as said:
        gpu_config("runtime.gpus_per_worker=2")
    text = str(said.value)
    assert "runtime.gpus_per_worker=2: a worker trains on one GPU, so 1 of each worker's GPUs" in text
    assert text.endswith(
        "set runtime.gpus_per_worker=1 and runtime.num_workers=4 to train on all 4 GPUs (one worker per GPU)"
    )
    assert "\n" not in text


@pytest.mark.parametrize(
    "sets",
    [
        ["runtime.gpus_per_worker=1"],
        ["runtime.gpus_per_worker=1.5", "runtime.use_gpu=false"],  # Ray asks for no GPU then
        ["runtime.gpus_per_worker=2", "runtime.backend=local"],  # the local backend does not read it
    ],
)
def test_what_ray_is_not_asked_for_above_one_gpu_is_accepted(sets):
    assert gpu_config(*sets).runtime.gpus_per_worker == float(sets[0].split("=")[1])


@pytest.fixture
def no_ray(monkeypatch):
    """The Ray driver's cluster start fails the test: what it decides, it decides before Ray starts."""
    monkeypatch.setattr(ray_launcher, "init_ray", lambda *a, **k: pytest.fail("Ray was started"))


def test_a_finished_run_rerun_on_other_data_settings_is_refused_before_ray_starts(tmp_path, no_ray):
    """``data.valid_frac`` 0.1 -> 0.2 takes training users away: rank 0 refuses the checkpoint's other
    training data once it has loaded it; the driver now gives that same line without starting Ray."""
    from metarec_dist import checkpoint as ckpt
    from metarec_dist.data import prepare_data
    from metarec_dist.data.digest import sharded_digest

    cfg, point, state, _ = _finished_on_a_file(tmp_path)
    changed = with_overrides(cfg, ["data.valid_frac=0.2"])
    with pytest.raises(UserError) as driver:  # a cache miss: the driver prepares the changed data itself
        ray_launcher._fit_on_ray(changed, False, tmp_path)
    now = prepare_data(changed.data)
    splits = now.user_splits()
    train = sharded_digest(splits.train, splits.train_users, 1)
    with pytest.raises(UserError) as rank0:  # what rank 0 says (resume_say "all": a data setting changed)
        ckpt.check_resume_config(point, state, changed, now.num_items, now.item_raw_ids, train, None, "all")
    assert str(driver.value) == str(rank0.value)
    text = str(driver.value)
    assert "its training data differs" in text and "data.valid_frac: 0.1 -> 0.2" in text and "\n" not in text
    with pytest.raises(UserError) as cached:  # a cache hit now: compared the same way
        ray_launcher._fit_on_ray(changed, False, tmp_path)
    assert str(cached.value) == text


def test_a_finished_run_rerun_on_the_same_data_under_other_settings_is_finished_before_ray_starts(
    tmp_path, no_ray, caplog
):
    """``data.min_history`` 1 -> 2 drops no user here (each has 10 or more interactions): the workers would
    warn of the changed setting and say "already finished"; the driver now does, and returns the result."""
    cfg, point, _, _ = _finished_on_a_file(tmp_path)
    with caplog.at_level(logging.INFO, logger="metarec"):
        out = ray_launcher._fit_on_ray(with_overrides(cfg, ["data.min_history=2"]), False, tmp_path)
    assert out["checkpoint"] == str(point)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("with changed settings: data.min_history: 1 -> 2" in m for m in warned), warned
    assert any("already finished at meta-step 2" in m for m in warned), warned
