"""A resumed run's progress bar (local and the Ray driver's) starts at the resumed meta-step, not at 0."""

from __future__ import annotations

from trained import local_config

from metarec_dist import checkpoint as ckpt
from metarec_dist.metrics import progress
from metarec_dist.metrics.progress import ProgressBar


def _cfg(tmp_path, *extra):
    return local_config(tmp_path, "bar", *extra)


def _checkpoint(folder, step):
    folder.mkdir(parents=True)
    (folder / ckpt.CLIENT_STATE).write_text(f'{{"step": {step}}}')
    ckpt.write_manifest(folder, step, 1, {})
    return folder


def test_the_bar_of_a_run_resuming_from_a_checkpoint_starts_at_its_step(tmp_path):
    cfg = _cfg(tmp_path, "train.meta_steps=50")
    bar = ProgressBar.for_run(cfg, _checkpoint(tmp_path / ckpt.ray_checkpoint_name(30), 30))
    assert (bar.bar.n, bar.bar.initial, bar.bar.total) == (30, 30, 50)
    bar.close()
    fresh = ProgressBar.for_run(cfg, None)
    assert fresh.bar.n == 0
    fresh.close()


def test_a_resumed_local_run_draws_its_bar_from_the_resumed_step(tmp_path, monkeypatch):
    from metarec_dist.train.launch import train_local

    train_local(_cfg(tmp_path, "train.meta_steps=2", "checkpoint.every=2"))
    drawn = []
    real = progress.tqdm

    def recording(*args, **kwargs):
        bar = real(*args, **kwargs)
        drawn.append(bar)
        return bar

    monkeypatch.setattr(progress, "tqdm", recording)
    out = train_local(_cfg(tmp_path, "train.meta_steps=4", "checkpoint.every=2"))
    assert out["resumed_from"] == 2
    assert drawn[0].initial == 2 and drawn[0].n == 4
