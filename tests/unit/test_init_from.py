"""train.init_from: a run starts from a finished run's model weights (checkpoint, run folder or export),
with a fresh optimizer and step; mismatches are UserErrors that name the parameter."""

from __future__ import annotations

import pytest
import torch

from metarec_dist.checkpoint import export
from metarec_dist.config import with_overrides
from metarec_dist.errors import UserError
from metarec_dist.eval.loading import load_model
from metarec_dist.eval.protocol import ColdStartProtocol
from metarec_dist.runtime.context import LocalContext
from metarec_dist.train.trainer import MetaTrainer


@pytest.fixture
def sasrec_run(tiny_cfg, synth_data, tmp_path):
    """A finished 3-step `sasrec` run: (run folder, its final checkpoint's model weights)."""
    cfg = with_overrides(tiny_cfg, ["meta.algorithm=sasrec", "train.seed=7"])
    out = MetaTrainer(cfg, LocalContext(tmp_path / "sasrec-s7"), synth_data).fit()
    return tmp_path / "sasrec-s7", load_model(out["checkpoint"]).model.state_dict(), out["checkpoint"]


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("source", ["run", "checkpoint", "export"])
def test_a_fomaml_run_starts_from_the_sasrec_weights(tiny_cfg, synth_data, sasrec_run, tmp_path, source):
    run_dir, weights, checkpoint = sasrec_run
    path = {"run": run_dir, "checkpoint": checkpoint, "export": tmp_path / "export"}[source]
    if source == "export":
        export(checkpoint, path)
    cfg = with_overrides(tiny_cfg, [f"train.init_from={path}"])  # fomaml, seed 0: other init without it
    trainer = MetaTrainer(cfg, LocalContext(tmp_path / "fomaml"), synth_data)
    for name, value in trainer.model.state_dict().items():
        assert_same(value, weights[name])
    fresh = MetaTrainer(tiny_cfg, LocalContext(None), synth_data).model.state_dict()
    assert not torch.equal(fresh["item_emb.weight"], weights["item_emb.weight"])  # the test can fail
    # Only the weights: the optimizer and the step start fresh, and the run trains its own meta_steps.
    assert trainer.engine.global_steps == 0 and not trainer.engine.optimizer.state
    assert trainer.fit()["step"] == cfg.train.meta_steps


def test_seed_in_the_path_is_the_runs_seed(tiny_cfg, synth_data, sasrec_run, tmp_path):
    """One config warm-starts every seed of a reproduction from the source run of its own seed."""
    _, weights, _ = sasrec_run
    cfg = with_overrides(tiny_cfg, [f"train.init_from={tmp_path / 'sasrec-s{seed}'}", "train.seed=7"])
    assert_same(
        MetaTrainer(cfg, LocalContext(None), synth_data).model.state_dict()["item_emb.weight"],
        weights["item_emb.weight"],
    )
    with pytest.raises(UserError, match="sasrec-s8: no such file or folder"):
        MetaTrainer(with_overrides(cfg, ["train.seed=8"]), LocalContext(None), synth_data)


def test_a_new_adapter_keeps_its_fresh_init(tiny_cfg, synth_data, sasrec_run):
    _, weights, checkpoint = sasrec_run
    cfg = with_overrides(tiny_cfg, [f"train.init_from={checkpoint}", "model.adapters=[lowrank,itemlr]"])
    state = MetaTrainer(cfg, LocalContext(None), synth_data).model.state_dict()
    plain = MetaTrainer(with_overrides(cfg, ["train.init_from=null"]), LocalContext(None), synth_data)
    fresh = plain.model.state_dict()
    n = len(weights["fast_init"])
    assert_same(state["fast_init"][:n], weights["fast_init"])  # the lowrank slice: the source's
    assert_same(state["fast_init"][n:], fresh["fast_init"][n:])  # the itemlr slice: fresh
    assert_same(state["item_factors.weight"], fresh["item_factors.weight"])
    assert_same(state["backbone.h.0.attn.c_attn.weight"], weights["backbone.h.0.attn.c_attn.weight"])


def test_a_missing_path_or_another_shape_is_a_user_error(tiny_cfg, synth_data, sasrec_run, tmp_path):
    run_dir, _, _ = sasrec_run
    with pytest.raises(UserError, match="no such file or folder"):
        MetaTrainer(
            with_overrides(tiny_cfg, [f"train.init_from={tmp_path / 'nope'}"]), LocalContext(None), synth_data
        )
    wider = with_overrides(tiny_cfg, [f"train.init_from={run_dir}", "model.hidden_size=32"])
    with pytest.raises(UserError, match=r"parameter \S+ has shape \[\d+(, \d+)*\] there and"):
        MetaTrainer(wider, LocalContext(None), synth_data)
    other = with_overrides(tiny_cfg, [f"train.init_from={run_dir}", "model.adapters=[itemlr]"])
    with pytest.raises(UserError, match=r"fast_init has shape .*adapters \['lowrank'\]"):
        MetaTrainer(other, LocalContext(None), synth_data)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="not a run folder with a complete checkpoint"):
        MetaTrainer(with_overrides(tiny_cfg, [f"train.init_from={empty}"]), LocalContext(None), synth_data)


# ------------------------------------------------------------------------------------ train.freeze

FROZEN = ["train.freeze=[backbone,item_emb]", "model.adapters=[lowrank,itemlr]", "meta.algorithm=metasgd"]


def test_a_frozen_warm_start_scores_as_its_source_and_trains_only_the_fast_weights(
    tiny_cfg, synth_data, sasrec_run, tmp_path
):
    """The point of train.freeze: a meta-learner starts exactly at the `sasrec` model (no restart penalty)
    and only the fast-weight machinery learns; the run checkpoints, resumes and exports as any other."""
    _, weights, checkpoint = sasrec_run
    cfg = with_overrides(tiny_cfg, [f"train.init_from={checkpoint}", *FROZEN])
    run = tmp_path / "frozen"
    trainer = MetaTrainer(cfg, LocalContext(run), synth_data)
    source = MetaTrainer(
        with_overrides(tiny_cfg, [f"train.init_from={checkpoint}"]), LocalContext(None), synth_data
    )
    protocol = ColdStartProtocol(synth_data, [1, 3], cfg.tasks.support_max, cfg.eval)
    for t in (trainer, source):
        t.engine.eval()
    ours, theirs = (protocol.per_user(t.engine, synth_data.valid, 0, ks=(10,)) for t in (trainer, source))
    for k in (1, 3):  # itemlr's fresh fast weights are zero: the same scores as the source at 0 steps
        torch.testing.assert_close(ours[k]["ndcg@10"], theirs[k]["ndcg@10"])
    trainable = {n for n, p in trainer.engine.module.named_parameters() if p.requires_grad}
    assert trainable == {"model.fast_init", "model.item_factors.weight", "algorithm.inner_lr_log_scale"}
    start = {n: v.clone() for n, v in trainer.engine.module.state_dict().items()}
    out = trainer.fit()
    assert len(trainer.engine.optimizer.state) == len(trainable)  # no optimizer state for the frozen ones
    end = trainer.engine.module.state_dict()
    for name, value in end.items():
        if name.startswith(("model.backbone.", "model.item_emb.")):  # frozen: the source's, bit for bit
            assert_same(value, weights[name.removeprefix("model.")])
    for name in trainable:
        assert not torch.equal(end[name], start[name]), name  # the test can fail: these moved
    # The checkpoint (exported on load) holds the same weights; a resume continues with the same freeze ...
    loaded = load_model(out["checkpoint"]).model.state_dict()
    for name, value in trainer.model.state_dict().items():
        assert_same(loaded[name], value)
    more = with_overrides(cfg, ["train.meta_steps=4"])
    resumed = MetaTrainer(more, LocalContext(run), synth_data)
    assert resumed.fit()["resumed_from"] == 3
    assert_same(resumed.model.state_dict()["item_emb.weight"], weights["item_emb.weight"])
    # ... and refuses another one (the optimizer state would not fit).
    with pytest.raises(UserError, match=r"train\.freeze: \['backbone', 'item_emb'\] -> \['backbone'\]"):
        MetaTrainer(
            with_overrides(more, ["train.freeze=[backbone]", "train.meta_steps=5"]),
            LocalContext(run),
            synth_data,
        ).fit()


def test_freeze_names_are_checked(tiny_cfg, synth_data):
    fine = with_overrides(tiny_cfg, ["train.freeze=[backbone.h.0,fast_init]"])
    frozen = [
        n
        for n, p in MetaTrainer(fine, LocalContext(None), synth_data).model.named_parameters()
        if not p.requires_grad
    ]
    assert "fast_init" in frozen and "backbone.h.0.mlp.c_fc.weight" in frozen
    assert "backbone.h.1.mlp.c_fc.weight" not in frozen and "item_emb.weight" not in frozen
    for bad in ("backbone.h.0.att", "backbon"):  # a prefix counts only at a dot
        with pytest.raises(
            UserError, match=rf"train\.freeze: no model parameter is named \['{bad}'\].*'backbone'"
        ):
            MetaTrainer(with_overrides(tiny_cfg, [f"train.freeze=[{bad}]"]), LocalContext(None), synth_data)
    everything = with_overrides(tiny_cfg, ["train.freeze=[backbone,item_emb,fast_init]"])
    with pytest.raises(UserError, match="leaves no model parameter to train"):
        MetaTrainer(everything, LocalContext(None), synth_data)
    with pytest.raises(ValueError, match="train.freeze must list distinct"):
        with_overrides(tiny_cfg, ["train.freeze=[backbone,backbone]"])


def test_a_frozen_warm_start_trains_checkpoints_and_scores_with_the_context_encoder(
    tiny_cfg, synth_data, sasrec_run, tmp_path
):
    """hyperfomaml on top of a frozen `sasrec` (issue 15, exp15d): the context encoder is the algorithm's,
    not the model's, so ``train.freeze`` leaves it training and ``train.init_from`` leaves it fresh; it
    starts at a zero offset (the source's scores), moves, is checkpointed, and evaluation scores from it."""
    from metarec_dist.eval.protocol import AdaptingScorer

    _, weights, checkpoint = sasrec_run
    frozen = ["train.freeze=[backbone,item_emb]", "model.adapters=[lowrank,itemlr]"]
    cfg = with_overrides(tiny_cfg, [f"train.init_from={checkpoint}", "meta.algorithm=hyperfomaml", *frozen])
    trainer = MetaTrainer(cfg, LocalContext(tmp_path / "hyper"), synth_data)
    trainable = {n for n, p in trainer.engine.module.named_parameters() if p.requires_grad}
    encoder = {n for n, _ in trainer.engine.module.named_parameters() if n.startswith("algorithm.context.")}
    assert encoder and trainable == {"model.fast_init", "model.item_factors.weight", *encoder}
    protocol = ColdStartProtocol(synth_data, [1, 3], cfg.tasks.support_max, cfg.eval)
    source = MetaTrainer(
        with_overrides(tiny_cfg, [f"train.init_from={checkpoint}"]), LocalContext(None), synth_data
    )
    for t in (trainer, source):
        t.engine.eval()
    ours, theirs = (protocol.per_user(t.engine, synth_data.valid, 0, ks=(10,)) for t in (trainer, source))
    for k in (1, 3):  # a fresh encoder's offset is zero: the source's scores
        torch.testing.assert_close(ours[k]["ndcg@10"], theirs[k]["ndcg@10"])
    start = {n: v.clone() for n, v in trainer.engine.module.state_dict().items()}
    out = trainer.fit()
    end = trainer.engine.module.state_dict()
    assert_same(end["model.item_emb.weight"], weights["item_emb.weight"])  # frozen
    for name in trainable:
        assert not torch.equal(end[name], start[name]), name  # the encoder learned too
    loaded = load_model(out["checkpoint"])
    assert loaded.algorithm_state.keys() == {n.removeprefix("algorithm.") for n in encoder}
    for name, value in loaded.algorithm_state.items():
        assert_same(value, end[f"algorithm.{name}"])
    # Evaluation scores from the trained encoder: the trainer's own scores, not those without its offset.
    trainer.engine.eval()
    off = {
        n: torch.zeros_like(v) if n.startswith("context.out.") else v
        for n, v in loaded.algorithm_state.items()
    }
    states = {"trained": loaded.algorithm_state, "no offset": off}
    got = {
        n: protocol.per_user(AdaptingScorer(loaded.model, loaded.algorithm, 0.05, state), synth_data.valid, 0)
        for n, state in states.items()
    }
    mine = protocol.per_user(trainer.engine, synth_data.valid, 0)
    scores = {n: torch.as_tensor(g[3]["ndcg@10"]) for n, g in got.items()}
    torch.testing.assert_close(scores["trained"], torch.as_tensor(mine[3]["ndcg@10"]))
    assert not torch.equal(scores["trained"], scores["no offset"])
