"""Throughput figures leave out the timing warm-up steps (checked with a fake clock, not by timing)."""

from __future__ import annotations

import pytest

from metarec_dist.config import with_overrides
from metarec_dist.runtime.context import LocalContext
from metarec_dist.train import trainer as trainer_module
from metarec_dist.train.trainer import MetaTrainer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def _fit_with_step_times(cfg, data, monkeypatch, seconds_of_step):
    """Run the real trainer; step i (1-based) advances the fake clock by seconds_of_step(i)."""
    clock = FakeClock()
    monkeypatch.setattr(trainer_module.time, "perf_counter", clock.perf_counter)
    trainer = MetaTrainer(cfg, LocalContext(None), data)
    real_step = trainer.train_step

    def timed_step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        clock.now += seconds_of_step(trainer.state.step)
        return out

    trainer.train_step = timed_step
    return trainer.fit()


@pytest.mark.parametrize("warmup, expected_seconds", [(0, 2 * 10.0 + 4 * 1.0), (2, 4 * 1.0)])
def test_tasks_per_s_leaves_out_the_timing_warmup(
    tiny_cfg, synth_data, monkeypatch, warmup, expected_seconds
):
    overrides = ["train.meta_steps=6", "train.log_every=6", f"train.timing_warmup={warmup}"]
    cfg = with_overrides(tiny_cfg, overrides)
    out = _fit_with_step_times(cfg, synth_data, monkeypatch, lambda step: 10.0 if step <= 2 else 1.0)
    timed_steps = 6 - warmup
    assert out["tasks_per_s"] == pytest.approx(timed_steps * cfg.meta.meta_batch_size / expected_seconds)


def test_timing_warmup_must_leave_steps_to_time(tiny_cfg):
    with pytest.raises(ValueError, match="train.timing_warmup"):
        with_overrides(tiny_cfg, ["train.timing_warmup=3"])  # meta_steps is 3
    with pytest.raises(ValueError, match="train.timing_warmup"):
        with_overrides(tiny_cfg, ["train.timing_warmup=-1"])
