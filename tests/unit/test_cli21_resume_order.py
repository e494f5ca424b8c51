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
