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
