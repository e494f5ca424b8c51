"""Session 22 (ray22): the resume refusals that the run folder's checkpoint manifest alone decides came from
the Ray driver only after it had started a cluster (and prepared the data in a Ray task): another number of
workers than wrote it, when the data was not cached (synthetic, Hub, a cache miss), and a file it lists
missing or of another size, from the workers as they loaded it. Now before Ray starts.
And whether a resumed run is finished is decided by the trainer's code from a checkpoint's client state
(``trainer.finished_checkpoint_message``), which the Ray driver asks before starting the cluster
(tests/integration/test_ray22_finished_rerun.py runs that on a real Ray run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dc18_data_checks import _ray_checkpoint  # noqa: E402

from metarec_dist.config import with_overrides  # noqa: E402
from metarec_dist.errors import UserError  # noqa: E402
from metarec_dist.runtime.ray_launcher import train_on_ray  # noqa: E402
from metarec_dist.train.trainer import finished_checkpoint_message  # noqa: E402


def test_another_number_of_workers_is_refused_before_ray_starts(tmp_path):
    import ray

    cfg, _, _, _ = _ray_checkpoint(tmp_path)  # written by 1 worker; synthetic data, not cached
    assert not ray.is_initialized()
    try:
        with pytest.raises(UserError, match="written by 1 workers and runtime.num_workers is 2"):
            train_on_ray(with_overrides(cfg, ["runtime.num_workers=2"]))
        assert not ray.is_initialized(), "Ray was started before the refusal"
    finally:
        ray.shutdown()


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_shard_missing_or_of_another_size_is_refused_before_ray_starts(tmp_path, damage):
    import ray

    from metarec_dist import checkpoint as ckpt

    cfg, folder, _, _ = _ray_checkpoint(tmp_path)
    shard = folder / "engine" / "state" / "mp_rank_00_model_states.pt"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"weights")
    ckpt.write_manifest(folder, 2, 1, ckpt.file_entries(folder))
    if damage == "missing":
        shard.unlink()
    else:
        shard.write_bytes(b"wei")
    assert not ray.is_initialized()
    try:
        with pytest.raises(UserError, match=f"shard engine/state/mp_rank_00_model_states.pt is {damage}"):
            train_on_ray(with_overrides(cfg, ["runtime.num_workers=1"]))
        assert not ray.is_initialized(), "Ray was started before the refusal"
    finally:
        ray.shutdown()


def test_an_early_stopped_checkpoint_is_finished_before_its_last_step(tiny_cfg):
    cfg = with_overrides(
        tiny_cfg, ["train.early_stop_patience=2", "train.meta_steps=10", "train.eval_every=1"]
    )
    stopped = {"step": 4, "train_state": {"step": 4}, "early_stop": {"best": 0.1, "best_step": 2, "bad": 2}}
    assert "already finished at meta-step 4 (early stopped)" in finished_checkpoint_message(cfg, stopped)
    going_on = {**stopped, "early_stop": {"best": 0.1, "best_step": 2, "bad": 1}}
    assert finished_checkpoint_message(cfg, going_on) is None
    # Raised patience: the run goes on from the same checkpoint.
    assert finished_checkpoint_message(with_overrides(cfg, ["train.early_stop_patience=3"]), stopped) is None
    # A checkpoint of a run without early stopping (no counters at all): finished at its last step only.
    assert finished_checkpoint_message(cfg, {"step": 4}) is None
    assert "all train.meta_steps done" in finished_checkpoint_message(cfg, {"step": 10})
