"""Early stopping (train.early_stop_patience): the run stops after `patience` validations without a new
best criterion, and what it then validates and saves is the best validated model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metarec_dist.config import with_overrides
from metarec_dist.eval.loading import load_model
from metarec_dist.eval.reproduce import finished, trained_steps
from metarec_dist.runtime.context import LocalContext
from metarec_dist.train.early_stop import EarlyStopping, criterion_parts, validation_criterion
from metarec_dist.train.trainer import MetaTrainer

# A large lr makes the tiny model's validation NDCG jump around (seed 0: up, then down at step 15).
NOISY = ["train.meta_steps=40", "train.log_every=5", "train.eval_every=5", "optim.lr=0.05"]


class Criteria:
    """A logger keeping (step, criterion) of every periodic validation."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, float]] = []

    def log(self, metrics: dict, step: int) -> None:
        if any(k.startswith("val/ndcg@10@k") for k in metrics) and "eval/cold_start_table" not in metrics:
            self.rows.append((step, validation_criterion(metrics)))

    def close(self) -> None:
        pass


def first_stop(rows: list[tuple[int, float]], patience: int) -> tuple[int, int, float]:
    """(stop step, best step, best value) of a criterion sequence, computed independently of the trainer."""
    best, best_step, bad = -1.0, 0, 0
    for step, value in rows:
        if value > best:
            best, best_step, bad = value, step, 0
        else:
            bad += 1
            if bad == patience:
                return step, best_step, best
    return rows[-1][0], best_step, best


def test_the_run_stops_at_the_first_plateau_and_keeps_the_best_model(tiny_cfg, synth_data, tmp_path):
    torch.set_num_threads(1)
    full = Criteria()
    MetaTrainer(with_overrides(tiny_cfg, NOISY), LocalContext(None), synth_data, full).fit()
    stop, best_step, best = first_stop(full.rows, patience=1)
    assert stop < 40, f"the reference run never got worse: {full.rows}"  # the case under test happens
    assert full.rows[[s for s, _ in full.rows].index(stop)][1] < best

    seen = Criteria()
    cfg = with_overrides(tiny_cfg, [*NOISY, "train.early_stop_patience=1"])
    trainer = MetaTrainer(cfg, LocalContext(tmp_path / "run"), synth_data, seen)
    out = trainer.fit()
    # Same training up to the stop (keeping a copy of the weights changes nothing), then no more steps.
    assert seen.rows == full.rows[: len(seen.rows)] and seen.rows[-1][0] == stop
    assert out["step"] == trainer.state.step == stop
    assert out["early_stop/best_step"] == best_step and out["early_stop/best_criterion"] == best
    # The weights left in the trainer are the best step's: validating them again gives its number exactly.
    assert validation_criterion(trainer.validate()) == pytest.approx(best, abs=1e-9)
    # ... and so are the saved (and exported) ones.
    loaded = load_model(out["checkpoint"])
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], value, rtol=0, atol=0)
    # The reproduce tooling counts the steps it ran (the budget) and takes the stopped run as finished.
    assert trained_steps(loaded) == (stop, best_step)
    assert finished(Path(out["checkpoint"]), cfg) and not finished(Path(out["checkpoint"]), tiny_cfg)
    # Re-running the stopped run (train.pretrain reuses it so) trains no further step, saves nothing new,
    # and keeps the best weights the final checkpoint holds.
    again = MetaTrainer(cfg, LocalContext(tmp_path / "run"), synth_data)
    rerun = again.fit()
    assert again.state.resumed_from == stop and rerun["step"] == stop
    assert (
        rerun["checkpoint"] == out["checkpoint"]
        and len(list((tmp_path / "run" / "checkpoints").iterdir())) == 1
    )
    assert validation_criterion(again.validate()) == pytest.approx(best, abs=1e-9)


def test_patience_counts_validations_without_a_new_best_and_restores_that_best():
    layer = torch.nn.Linear(2, 1)
    stopper = EarlyStopping(2, layer)
    weights = {}
    for step, score in [(10, 0.1), (20, 0.3), (30, 0.3), (40, 0.25)]:  # a tie is not an improvement
        with torch.no_grad():
            layer.weight.fill_(step)
        weights[step] = layer.weight.clone()
        stopper.update(step, score)
        assert stopper.should_stop == (step == 40)
    assert stopper.restore_best(40) == {"early_stop/best_step": 20, "early_stop/best_criterion": 0.3}
    torch.testing.assert_close(layer.weight, weights[20])
    # A resumed run continues the count (the weights themselves are not in the checkpoint).
    resumed = EarlyStopping(2, layer)
    resumed.load_state_dict(stopper.state_dict())
    assert (resumed.best, resumed.best_step, resumed.bad) == (0.3, 20, 2) and resumed.best_state is None
    # ... and knows that a final checkpoint holds the best weights already (re-running a finished run).
    assert resumed.restored and not EarlyStopping(2, layer).restored


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["train.early_stop_patience=-1"], "early_stop_patience must be an integer >= 0"),
        (["train.early_stop_patience=2"], "needs periodic validations"),  # eval_every 0
        (["train.early_stop_patience=2", "train.log_every=4", "train.eval_every=6"], "multiple of"),
        (
            ["train.early_stop_patience=2", "train.eval_every=1"]
            + ["runtime.deepspeed=true", "runtime.zero_stage=3"],
            "zero_stage: 0",
        ),
        (["train.eval_shots=[10]"], "exceed tasks.support_max"),
    ],
)
def test_early_stopping_settings_are_checked(tiny_cfg, overrides, match):
    with pytest.raises(ValueError, match=match):
        with_overrides(tiny_cfg, overrides)


def test_early_stopping_without_validation_users_is_an_error(tiny_cfg, synth_data):
    from dataclasses import replace

    from metarec_dist.errors import UserError

    cfg = with_overrides(tiny_cfg, ["train.early_stop_patience=1", "train.eval_every=1"])
    with pytest.raises(UserError, match="needs validation users"):
        MetaTrainer(cfg, LocalContext(None), replace(synth_data, valid=[]))


def test_checkpointing_at_each_validation_changes_nothing(tiny_cfg, synth_data, tmp_path):
    """configs/coldstart*.yaml checkpoint at every validation: the run ends as one that checkpoints only at
    the end, and a stop on a checkpoint step saves that step once (no folder moved aside)."""
    torch.set_num_threads(1)
    cfg = with_overrides(tiny_cfg, [*NOISY, "train.early_stop_patience=1"])
    plain = MetaTrainer(cfg, LocalContext(tmp_path / "plain"), synth_data).fit()
    every = with_overrides(cfg, ["checkpoint.every=5", "checkpoint.keep=1"])
    out = MetaTrainer(every, LocalContext(tmp_path / "every", keep=1), synth_data).fit()
    drop = ("checkpoint", "tasks_per_s", "tokens_per_s", "peak_memory_gb")
    assert {k: v for k, v in out.items() if k not in drop} == {
        k: v for k, v in plain.items() if k not in drop
    }
    assert out["step"] < 40  # it stopped early, on a checkpoint step
    assert [p.name for p in (tmp_path / "every" / "checkpoints").iterdir()] == [f"step_{out['step']:06d}"]
    a, b = (load_model(o["checkpoint"]).model.state_dict() for o in (plain, out))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_an_early_stopping_run_resumes_and_ends_as_the_uninterrupted_one(tiny_cfg, synth_data, tmp_path):
    """The stopper's counters travel in the checkpoint; the resumed run ends at the same step with the same
    kept weights."""
    import shutil

    torch.set_num_threads(1)
    overrides = [*NOISY, "train.early_stop_patience=3", "checkpoint.every=10", "checkpoint.keep=10"]
    cfg = with_overrides(tiny_cfg, overrides)
    whole = MetaTrainer(cfg, LocalContext(tmp_path / "whole", keep=10), synth_data).fit()
    # The same run killed after its step-20 checkpoint: a copy of the folder without the later ones.
    shutil.copytree(tmp_path / "whole", tmp_path / "cut")
    for later in (tmp_path / "cut" / "checkpoints").iterdir():
        if later.name > "step_000020":
            shutil.rmtree(later)
    resumed = MetaTrainer(cfg, LocalContext(tmp_path / "cut", keep=10), synth_data)
    out = resumed.fit()
    assert resumed.state.resumed_from == 20
    assert (out["step"], out["early_stop/best_step"]) == (whole["step"], whole["early_stop/best_step"])
    assert out["early_stop/best_criterion"] == pytest.approx(whole["early_stop/best_criterion"], abs=1e-9)
    a, b = (load_model(o["checkpoint"]).model.state_dict() for o in (whole, out))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_a_run_resumed_after_its_best_validation_ends_with_the_best_weights(tiny_cfg, synth_data, tmp_path):
    """The best weights travel in the periodic checkpoint: a run cut after a validation that was not a new
    best, and resumed, keeps the same (earlier) weights as the uninterrupted run, not its last ones."""
    import json
    import shutil

    torch.set_num_threads(1)
    # seed 0: the last new best at step 55, none at 60 or 65 (measured: the asserts below check it)
    steps = ["train.meta_steps=65", "train.log_every=5", "train.eval_every=5", "optim.lr=0.1"]
    overrides = [*steps, "train.early_stop_patience=3", "checkpoint.every=5", "checkpoint.keep=20"]
    cfg = with_overrides(tiny_cfg, overrides)
    whole = MetaTrainer(cfg, LocalContext(tmp_path / "whole", keep=20), synth_data).fit()
    best = whole["early_stop/best_step"]
    assert best < whole["step"]  # the kept weights are not the last step's
    folders = sorted((tmp_path / "whole" / "checkpoints").iterdir())
    states = {f: json.loads((f / "client_state.json").read_text())["early_stop"] for f in folders}
    # the last periodic checkpoint written after the best validation (the case under test)
    cut = next(f for f in reversed(folders[:-1]) if states[f]["bad"] > 0 and states[f]["best_step"] == best)
    assert (cut / "early_stop.safetensors").is_file()
    assert not (folders[-1] / "early_stop.safetensors").exists()  # the final one holds the best weights
    shutil.copytree(tmp_path / "whole", tmp_path / "cut")
    for later in (tmp_path / "cut" / "checkpoints").iterdir():
        if later.name > cut.name:
            shutil.rmtree(later)
    out = MetaTrainer(cfg, LocalContext(tmp_path / "cut", keep=20), synth_data).fit()
    assert (out["step"], out["early_stop/best_step"]) == (whole["step"], best)
    a, b = (load_model(o["checkpoint"]).model.state_dict() for o in (whole, out))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_the_log_line_names_each_support_size_beside_the_mean(caplog):
    """The criterion is a mean over K; a run without a metrics logger (reproduce, W&B off) sees each term in
    the log, in K order (K = 10 after K = 3, not before it as strings sort)."""
    metrics = {"val/ndcg@10@k10": 0.4, "val/ndcg@10@k1": 0.1, "val/ndcg@10@k3": 0.25, "val/recall@10@k1": 0.9}
    parts = criterion_parts(metrics)
    assert parts == "K = 1 0.10000, K = 3 0.25000, K = 10 0.40000"
    assert criterion_parts({"val/loo_ndcg@10": 0.3}) == ""
    with caplog.at_level("INFO", logger="metarec"):
        EarlyStopping(2, torch.nn.Linear(1, 1)).update(5, validation_criterion(metrics), parts)
    assert "validation at meta-step 5: criterion 0.25000 [NDCG@10 K = 1 0.10000, K = 3 0.25000, K = 10 " in (
        caplog.text
    )
