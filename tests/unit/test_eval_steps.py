"""train.eval_steps: the periodic validation (and so early stopping) adapts with the steps the run will be
served with -- e.g. 0 for an export served with `metarec export --steps 0` -- instead of always the trained
meta.adaptation_steps."""

from __future__ import annotations

import pytest
import torch

from metarec_dist.config import MetaConfig, with_overrides
from metarec_dist.meta import check_training
from metarec_dist.runtime.context import LocalContext
from metarec_dist.train.trainer import MetaTrainer

UNTRAINED = ["train.meta_steps=0", "meta.algorithm=fomaml", "meta.inner_lr=2.0", "train.eval_shots=[1,3]"]


def validated(tiny_cfg, synth_data, *settings: str) -> dict:
    torch.manual_seed(0)
    trainer = MetaTrainer(with_overrides(tiny_cfg, [*UNTRAINED, *settings]), LocalContext(None), synth_data)
    return {k: v for k, v in trainer.validate().items() if k.startswith("val/")}


def test_validation_adapts_with_train_eval_steps(tiny_cfg, synth_data):
    torch.set_num_threads(1)
    trained = validated(tiny_cfg, synth_data)  # null: the trained meta.adaptation_steps (3)
    assert validated(tiny_cfg, synth_data, "train.eval_steps=3") == trained
    init = validated(tiny_cfg, synth_data, "train.eval_steps=0")
    assert init != trained  # the adaptation moves the scores, so the setting is what decides
    # 0 steps is the initialisation alone: the same model scored by a non-adapting algorithm's validation.
    assert validated(tiny_cfg, synth_data, "train.eval_steps=0", "meta.inner_lr=0.5") == init


@pytest.mark.parametrize("value", ["-1", "true", "1.5", "'3'", "[0]"])
def test_a_wrong_eval_steps_is_one_error_naming_the_setting(tiny_cfg, value):
    with pytest.raises(ValueError, match="train.eval_steps"):  # the loader's type check, or the range
        with_overrides(tiny_cfg, [f"train.eval_steps={value}"])


def test_eval_steps_for_an_algorithm_that_does_not_adapt_is_refused():
    with pytest.raises(ValueError, match="train.eval_steps=2: meta.algorithm=none does not adapt"):
        check_training(MetaConfig(algorithm="none"), eval_steps=2)
    assert check_training(MetaConfig(algorithm="none"), eval_steps=0) is not None
    assert check_training(MetaConfig(algorithm="fomaml"), eval_steps=2) is not None


def test_a_run_validated_at_eval_steps_is_served_at_them_without_a_record(trained, tmp_path):
    """What early stopping kept is best at ``train.eval_steps``: recommend / serve from the run (or its plain
    export) apply those steps, and GET / says where they come from; a record or --steps still wins."""
    from metarec_dist.cli import main
    from metarec_dist.eval.recommend import Recommender

    run = trained("train.eval_steps=0")
    lr = run.cfg.meta.inner_lr
    assert run.cfg.meta.adaptation_steps > 0  # the trained steps differ from the validated ones
    served = Recommender.load(str(run.folder))
    assert served.setting(3) == (0, lr)
    assert served.served_adaptation() == {"steps": 0, "inner_lr": lr, "source": "validated"}
    assert main(["export", "--checkpoint", str(run.folder), "--out", str(tmp_path / "e"), "--no-fuse"]) == 0
    assert Recommender.load(str(tmp_path / "e")).setting(3) == (0, lr)
    fixed = Recommender(served.loaded, served.catalogue, None, (2, lr))
    assert fixed.served_adaptation()["source"] == "fixed" and fixed.setting(3) == (2, lr)
    plain = Recommender.load(str(trained().folder))
    assert plain.served_adaptation() == {
        "steps": run.cfg.meta.adaptation_steps,
        "inner_lr": lr,
        "source": "trained",
    }


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("meta.adaptation_steps=100000", r"meta.adaptation_steps must be in \[0, 1000\], got 100000"),
        ("train.eval_steps=1001", r"train.eval_steps must be null .* whole number in \[0, 1000\]"),
    ],
)
def test_inner_step_counts_past_the_bound_are_refused(tiny_cfg, setting, said):
    """Every inner step is a forward and backward pass per task: 10**5 of them is a typo, refused before
    any data is read, as `--steps` is at test time."""
    with pytest.raises(ValueError, match=said):
        with_overrides(tiny_cfg, [setting])
    with_overrides(tiny_cfg, [setting.split("=")[0] + "=1000"])  # the bound itself is a setting


def test_the_cli_names_the_setting_once(capsys):
    """`--set train.eval_steps=2: train.eval_steps=2: meta.algorithm=...`: the --set was said twice."""
    from trained import TINY

    from metarec_dist.cli import main

    argv = ["train", "--config", TINY, "--set", "meta.algorithm=none", "--set", "train.eval_steps=2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: --set train.eval_steps=2: meta.algorithm=none does not adapt")
        and err.count("train.eval_steps=2") == 1
    )
