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


def _finished_on_a_file(tmp_path: Path, *settings: str):
    """A finished one-worker Ray run's checkpoint (two steps of two) over a RecBole log, with the digest of
    its training users as the workers record it; the data files' folder."""
    import json

    from feature_data import write_feature_data

    from metarec_dist import checkpoint as ckpt
    from metarec_dist.config import load_config, resolve_loss
    from metarec_dist.data import prepare_data
    from metarec_dist.data.digest import sharded_digest
    from metarec_dist.metrics.redact import redact
    from metarec_dist.runtime.ray_launcher import for_workers

    inter = write_feature_data(tmp_path / "data")
    sets = [
        "runtime.backend=ray",
        f"runtime.storage_path={tmp_path}",
        "runtime.run_name=r",
        "train.meta_steps=2",
    ]
    data = ["data.format=recbole", f"data.path={inter}", "data.min_history=1", f"data.cache_dir={tmp_path}/c"]
    cfg = for_workers(load_config("configs/tiny.yaml", [*sets, *data, *settings]))
    prepared = prepare_data(cfg.data)
    splits = prepared.user_splits()
    point = tmp_path / "r" / ckpt.ray_checkpoint_name(2)
    point.mkdir(parents=True)
    ckpt.write_manifest(point, 2, 1, {})
    state = {
        "step": 2,
        "train_state": {"step": 2},
        "config": redact(resolve_loss(cfg, prepared.num_items).to_dict()),
        "num_items": prepared.num_items,
        "item_raw_ids": prepared.item_raw_ids,
        ckpt.TRAIN_DATA: sharded_digest(splits.train, splits.train_users, 1),
    }
    (point / ckpt.CLIENT_STATE).write_text(json.dumps(state))
    return cfg, point, state, tmp_path / "data"


@pytest.mark.parametrize("cache", ["false", "true"])
def test_a_finished_run_whose_data_files_changed_is_refused_as_the_workers_refuse(tmp_path, cache):
    """rt23: with the data settings unchanged and the log's interactions changed, a re-run of a finished Ray
    run said "already finished ... nothing to train" (the driver compared the catalogue only), where the
    workers, had steps been left, refused the checkpoint's other training data. Now the same refusal, from
    the driver, before Ray starts. With data.cache=true: the new log's cache entry (a hit) is compared too."""
    import ray
    from feature_data import write_feature_data

    from metarec_dist import checkpoint as ckpt
    from metarec_dist.data import prepare_data
    from metarec_dist.data.digest import sharded_digest
    from metarec_dist.runtime.ray_launcher import finished_result

    cfg, point, state, folder = _finished_on_a_file(tmp_path, f"data.cache={cache}")
    assert finished_result(cfg, point, checked=False) is not None  # the same data: finished
    write_feature_data(folder, seed=1)  # other interactions over the same items; same data settings
    now = prepare_data(cfg.data)  # with data.cache=true: its cache entry, which the driver then hits
    assert (now.num_items, now.item_raw_ids) == (state["num_items"], state["item_raw_ids"])
    splits = now.user_splits()
    with pytest.raises(UserError) as workers:  # what rank 0 says on loading the checkpoint, steps left
        ckpt.check_resume_config(
            point,
            state,
            cfg,
            now.num_items,
            now.item_raw_ids,
            sharded_digest(splits.train, splits.train_users, 1),
        )
    with pytest.raises(UserError) as driver:
        finished_result(cfg, point, checked=cache == "true")
    assert str(driver.value) == str(workers.value)
    assert "its training data differs" in str(driver.value) and "\n" not in str(driver.value)
    assert not ray.is_initialized()
