"""A refused resume says so first: ``metarec train`` drew its progress bar (``meta-train [a]: 50%|...|
2/4``) before the trainer's resume checks, so the refusal came under a bar line."""

from __future__ import annotations

from trained import train_args

from metarec_dist.cli import main


def test_a_refused_resume_prints_its_error_before_any_progress(tmp_path, capsys):
    assert main(train_args(tmp_path, "a", "checkpoint.every=1")) == 0
    assert "meta-train [a]" in capsys.readouterr().err  # an accepted run draws its bar

    assert main(train_args(tmp_path, "a", "model.hidden_size=32", "train.meta_steps=4")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot resume from "), err
    assert "meta-train" not in err and "model.hidden_size: 16 -> 32" in err

    assert main(train_args(tmp_path, "a", "train.meta_steps=3")) == 0  # accepted: the bar from step 2
    assert "2/3" in capsys.readouterr().err


def test_the_ray_drivers_bar_is_drawn_at_the_first_report(tmp_path, monkeypatch):
    """Given the run (the Ray driver's use: its workers check the resume and report only once it is
    accepted), the bar is drawn at the first report, from the resumed step; a refusal draws none."""
    from trained import local_config

    from metarec_dist.train.launch import BarOnceResumed

    drawn = recorded_bars(monkeypatch)
    cfg = local_config(tmp_path, "r", "train.meta_steps=8")
    refused = BarOnceResumed(cfg, None)
    refused.close()
    assert drawn == []
    bar = BarOnceResumed(cfg, None)
    bar.log({"loss": 1.0}, 3)
    bar.close()
    assert len(drawn) == 1 and drawn[0].n == 3 and drawn[0].total == 8


def test_the_bar_drawn_at_a_report_starts_there_not_at_zero(tmp_path, monkeypatch):
    """The Ray driver's bar, drawn at rank 0's first report (step 25 of the quickstart), took the 25 steps
    before it as its first update, made in no time: ``25/600 [00:00<00:00, 252061.54step/s]``."""
    from trained import local_config

    from metarec_dist.train.launch import BarOnceResumed

    drawn = recorded_bars(monkeypatch)
    bar = BarOnceResumed(local_config(tmp_path, "r", "train.meta_steps=600"), None)
    bar.log({"loss": 1.0}, 25)
    rate = drawn[0].format_dict["rate"]
    bar.close()
    assert drawn[0].format_dict["initial"] == 25 and drawn[0].n == 25
    assert rate is None  # before: 25 steps over ~0 s


def recorded_bars(monkeypatch) -> list:
    """Every tqdm bar the progress module draws from now on, in order."""
    from metarec_dist.metrics import progress

    drawn: list = []
    real = progress.tqdm

    def recording(*args, **kwargs):
        drawn.append(real(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(progress, "tqdm", recording)
    return drawn
