"""A resume on other data is refused (session 17): the checkpoint records its item catalogue and a digest of
the training users' sequences, so another file, split, seed or filter is named, not trained on silently."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metarec_dist import checkpoint as ckpt
from metarec_dist.config import with_overrides
from metarec_dist.runtime.context import LocalContext
from metarec_dist.train.trainer import MetaTrainer


def _fit(cfg, data, run, *overrides):
    cfg = with_overrides(cfg, list(overrides))
    return MetaTrainer(cfg, LocalContext(run, cfg.checkpoint.keep), data).fit()


def test_a_changed_user_split_is_refused_naming_the_setting(tiny_cfg, tmp_path):
    """Prepared by the run itself: another data.valid_frac puts other users in training (and users the
    checkpoint trained on among those it validates on)."""
    run, sets = tmp_path / "run", ["data.format=synthetic", "data.synthetic_users=60", "data.cache=false"]
    from metarec_dist.data.pipeline import prepare_data

    cfg = with_overrides(tiny_cfg, sets)
    _fit(cfg, prepare_data(cfg.data).user_splits(), run, "train.meta_steps=2")
    moved = with_overrides(cfg, ["data.valid_frac=0.2"])
    with pytest.raises(ValueError) as err:
        _fit(moved, prepare_data(moved.data).user_splits(), run, "train.meta_steps=3")
    msg = str(err.value)
    assert "the training users or their interactions" in msg and "data.valid_frac: 0.1 -> 0.2" in msg
    assert f"train.init_from={run}" in msg and "runtime.run_name=NEW" in msg and "\n" not in msg
    # The same data again resumes (data.cache is not the data).
    out = _fit(cfg, prepare_data(cfg.data).user_splits(), run, "train.meta_steps=3", "data.cache=true")
    assert out["resumed_from"] == 2


def test_data_files_that_changed_under_the_same_settings_are_refused(tiny_cfg, synth_data, tmp_path):
    run = tmp_path / "run"
    _fit(tiny_cfg, synth_data, run, "train.meta_steps=2")
    synth_data.train[0] = synth_data.train[0][::-1].copy()  # one user's history, reordered
    with pytest.raises(ValueError, match=r"training users or their interactions.*no data setting changed"):
        _fit(tiny_cfg, synth_data, run, "train.meta_steps=3")


def test_a_catalogue_of_the_same_size_with_other_items_is_refused(tiny_cfg, synth_data, tmp_path):
    run = tmp_path / "run"
    synth_data.item_raw_ids = [f"m{i}" for i in range(1, 41)]
    _fit(tiny_cfg, synth_data, run, "train.meta_steps=2")
    synth_data.item_raw_ids = ["m1", "m3", "m2", *synth_data.item_raw_ids[3:]]  # same size, ids moved
    with pytest.raises(ValueError, match=r"the item catalogue \(item 2 was 'm2', now 'm3'\)"):
        _fit(tiny_cfg, synth_data, run, "train.meta_steps=3")


def test_the_digest_ignores_row_order_and_sees_any_change(synth_data):
    from metarec_dist.train.trainer import train_data_digest

    ctx = LocalContext(None)
    base = train_data_digest(ctx, synth_data)
    order = np.random.default_rng(0).permutation(len(synth_data.train))
    shuffled = type(synth_data)(
        [synth_data.train[i] for i in order], [], [], 40, train_users=np.arange(len(order))[order]
    )
    assert train_data_digest(ctx, shuffled) == base
    moved = type(synth_data)(list(synth_data.train), [], [], 40, train_users=np.arange(1, len(order) + 1))
    assert train_data_digest(ctx, moved) != base  # the same sequences under other users
    assert train_data_digest(ctx, synth_data, chunk=7) == base  # chunking is no part of the digest


def test_a_checkpoint_without_a_digest_still_resumes(tiny_cfg, synth_data, tmp_path):
    """Checkpoints written before the digest: not compared (nothing to compare with), not refused."""
    run = tmp_path / "run"
    _fit(tiny_cfg, synth_data, run, "train.meta_steps=2")
    folder = run / "checkpoints" / "step_000002"
    state = json.loads((folder / ckpt.CLIENT_STATE).read_text())
    del state[ckpt.TRAIN_DATA]
    (folder / ckpt.CLIENT_STATE).write_text(json.dumps(state))
    ckpt.write_manifest(folder, 2, 1, ckpt.file_entries(folder))
    synth_data.train[0] = synth_data.train[0][::-1].copy()
    assert _fit(tiny_cfg, synth_data, run, "train.meta_steps=3")["resumed_from"] == 2


def test_ray_driver_refuses_another_catalogue_before_ray_starts(tmp_path):
    from metarec_dist.config import load_config
    from metarec_dist.metrics.redact import redact
    from metarec_dist.runtime.ray_launcher import check_resume_settings, for_workers, resume_point_of

    sets = ["runtime.backend=ray", f"runtime.storage_path={tmp_path}", "runtime.run_name=r"]
    cfg = for_workers(load_config(None, [*sets, "data.format=synthetic", "data.cache=false"]))
    folder = tmp_path / "r" / ckpt.ray_checkpoint_name(2)
    folder.mkdir(parents=True)
    ckpt.write_manifest(folder, 2, 1, {})
    ids = [str(i) for i in range(1, 41)]
    state = {"step": 2, "config": redact(cfg.to_dict()), "num_items": 40, "item_raw_ids": ids}
    (folder / ckpt.CLIENT_STATE).write_text(json.dumps(state))
    point = resume_point_of(cfg)
    check_resume_settings(cfg, point, 40, ids)
    with pytest.raises(ValueError, match=r"item catalogue \(item 40 was '40', now 'x'\)"):
        check_resume_settings(cfg, point, 40, [*ids[:39], "x"])


def test_an_export_keeps_the_training_data_digest(tiny_cfg, synth_data, tmp_path):
    """So that an evaluation of the export can tell whether its data is the data the model was trained on."""
    run = tmp_path / "run"
    _fit(tiny_cfg, synth_data, run, "train.meta_steps=2")
    folder = ckpt.find_checkpoint(run)
    out = ckpt.export(folder, tmp_path / "exported")
    meta = json.loads((out / ckpt.EXPORT_CONFIG).read_text())
    digest = json.loads((folder / ckpt.CLIENT_STATE).read_text())[ckpt.TRAIN_DATA]
    assert meta[ckpt.TRAIN_DATA] == digest and len(digest) == 64
