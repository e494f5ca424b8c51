"""Resuming with one setting changed (session 17): each change either continues, or is one error naming the
setting and what to do, never a KeyError or size-mismatch traceback."""

from __future__ import annotations

import pytest

from metarec_dist.config import with_overrides
from metarec_dist.runtime.context import LocalContext
from metarec_dist.train.trainer import MetaTrainer


def _fit(cfg, data, run, *overrides):
    cfg = with_overrides(cfg, list(overrides))
    return MetaTrainer(cfg, LocalContext(run, cfg.checkpoint.keep), data).fit()


@pytest.mark.parametrize(
    ("before", "after", "said"),
    [
        (
            "tasks.shards=2",
            "tasks.shards=0",
            r"tasks\.shards=2, this run has tasks\.shards=0 or 1: .*tasks\.shards=2",
        ),
        (
            "tasks.shards=0",
            "tasks.shards=2",
            r"tasks\.shards=0 or 1, this run has tasks\.shards=2: .*tasks\.shards=1",
        ),
        ("tasks.shards=2", "tasks.shards=4", r"tasks\.shards=2, this run has tasks\.shards=4"),
    ],
)
def test_another_task_stream_layout_is_named(tiny_cfg, synth_data, tmp_path, before, after, said):
    run = tmp_path / "run"
    _fit(tiny_cfg, synth_data, run, "train.meta_steps=2", before)
    with pytest.raises(ValueError, match=said):
        _fit(tiny_cfg, synth_data, run, "train.meta_steps=3", after)
    assert _fit(tiny_cfg, synth_data, run, "train.meta_steps=3", before)["resumed_from"] == 2


def test_another_number_of_workers_says_how_to_start_from_the_weights(tmp_path):
    """Both refusals (the Ray driver's, and a worker's) name the setting, the value to resume with, and
    train.init_from, which reads any engine layout; none suggests a conversion the run cannot load."""
    from metarec_dist import checkpoint as ckpt

    folder = tmp_path / "r" / ckpt.ray_checkpoint_name(2)
    folder.mkdir(parents=True)
    ckpt.write_manifest(folder, 2, 2, {})
    (folder / ckpt.CLIENT_STATE).write_text('{"step": 2}')
    with pytest.raises(ValueError) as err:
        ckpt.open_checkpoint(folder, world_size=1)
    msg = str(err.value)
    assert "runtime.num_workers is 1" in msg and "--set runtime.num_workers=2" in msg
    assert f"train.init_from={tmp_path / 'r'})" in msg and "convert" not in msg
    assert ckpt.open_checkpoint(folder, world_size=2)["step"] == 2


def test_another_engine_layout_says_how_to_start_from_the_weights(tiny_cfg, synth_data, tmp_path):
    run = tmp_path / "run"
    _fit(tiny_cfg, synth_data, run, "train.meta_steps=2")
    with pytest.raises(ValueError) as err:
        _fit(tiny_cfg, synth_data, run, "train.meta_steps=3", "runtime.deepspeed=true")
    msg = str(err.value)
    assert "runtime.deepspeed: False -> True" in msg and f"--set train.init_from={run} " in msg
    with pytest.raises(ValueError) as err:  # a model shape: the weights would not fit, no such advice
        _fit(tiny_cfg, synth_data, run, "train.meta_steps=3", "model.num_layers=3")
    assert "model.num_layers: 2 -> 3" in str(err.value) and "init_from" not in str(err.value)


def test_training_longer_and_saving_differently_is_no_warning(tiny_cfg, synth_data, tmp_path, caplog):
    import logging

    run = tmp_path / "run"
    _fit(tiny_cfg, synth_data, run, "train.meta_steps=2", "checkpoint.keep=3")
    quiet = ["train.meta_steps=3", "checkpoint.keep=1", "checkpoint.every=1", "train.log_every=2"]
    with caplog.at_level(logging.INFO, logger="metarec"):
        assert _fit(tiny_cfg, synth_data, run, *quiet)["resumed_from"] == 2
    said = {r.levelno: r.getMessage() for r in caplog.records if "with changed settings" in r.getMessage()}
    assert list(said) == [logging.INFO] and "train.meta_steps: 2 -> 3" in said[logging.INFO]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="metarec"):  # lowered: a warning, with the other change
        _fit(tiny_cfg, synth_data, run, "train.meta_steps=2", "optim.lr=0.01")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("train.meta_steps: 3 -> 2" in m and "optim.lr" in m for m in warned)


def test_another_precision_is_refused_before_deepspeed_reads_the_checkpoint(tmp_path):
    """fp32 -> bf16 under DeepSpeed loaded the checkpoint into the bf16 optimizer: KeyError
    'dynamic_loss_scale'. It is named with the other layout settings, before any shard is read."""
    from metarec_dist import checkpoint as ckpt
    from metarec_dist.config import load_config
    from metarec_dist.metrics.redact import redact

    base = ["runtime.deepspeed=true", "data.format=synthetic"]
    saved = load_config(None, base)
    client = {"step": 2, "config": redact(saved.to_dict()), "num_items": 40}
    with pytest.raises(ValueError, match=r"runtime\.precision: 'fp32' -> 'bf16'.*train\.init_from="):
        ckpt.check_resume_config(tmp_path, client, load_config(None, [*base, "runtime.precision=bf16"]), 40)
    ckpt.check_resume_config(tmp_path, client, saved, 40)


def test_a_ray_run_that_lowered_keep_ends_after_pruning_the_checkpoint_it_resumed_from(tmp_path):
    """Resumed with checkpoint.keep=1, a Ray run trains on, saves, and prunes the checkpoint it resumed
    from; the driver then read that checkpoint's client state and failed the finished run ("... cannot
    be read ...: the checkpoint is damaged")."""
    from metarec_dist.runtime.ray_launcher import with_resume_point

    gone = tmp_path / "run" / "checkpoint_step_000002"  # resumed from, then pruned: never created here
    assert "resumed_from" not in with_resume_point({"step": 3.0}, gone)
    assert with_resume_point({"step": 2.0}, gone)["resumed_from"] == 2  # nothing trained: said so
