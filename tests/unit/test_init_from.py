"""train.init_from: a run starts from a finished run's model weights (checkpoint, run folder or export),
with a fresh optimizer and step; mismatches are UserErrors that name the parameter."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from metarec_dist.checkpoint import export
from metarec_dist.config import with_overrides
from metarec_dist.data.split import UserSplits
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


# ------------------------------------------------------------------------- a newer log (the catalogue grows)

RAW = [f"r{i}" for i in range(1, 41)]  # the raw ids of synth_data's 40 items
NEW = [f"n{k}" for k in range(6)]
ONLINE = ["model.adapters=[lowrank,itemlr,bias]"]  # every item-indexed tensor: emb, factors, bias


def with_genres(data, raw):
    """``data`` with raw ids ``raw`` and one item feature, a genre derived from the raw id (the same
    vocabulary in every log, other rows wherever the numbering differs)."""
    from metarec_dist.data.features import SPECIALS, EncodedFeature, FeatureTables

    genre = [len(SPECIALS) + int(r[1:]) % 4 for r in raw]
    feature = EncodedFeature("genre", "token", [*SPECIALS, "g0", "g1", "g2", "g3"], np.array([0, *genre]))
    return dataclasses.replace(data, item_raw_ids=raw, features=FeatureTables(item={"genre": feature}))


def newer_log(data):
    """The next log of ``data`` (raw ids RAW): its first 5 items gone, 6 new ones numbered first (so every
    kept item's id moves), each training user with one new item at the end; its genres by raw id."""
    raw = NEW + RAW[5:]
    index = {r: i + 1 for i, r in enumerate(raw)}

    def move(seqs, extra):
        out = []
        for u, s in enumerate(seqs):
            kept = [index[RAW[x - 1]] for x in s.tolist() if RAW[x - 1] in index]
            out.append(np.array(kept + ([1 + u % len(NEW)] if extra else []), dtype=s.dtype))
        return out

    return with_genres(UserSplits(move(data.train, True), move(data.valid, False), [], len(raw)), raw)


@pytest.fixture
def raw_run(tiny_cfg, synth_data, tmp_path):
    """A finished 3-step run (fomaml, seed 7) on synth_data with raw ids RAW and a genre feature: (its
    checkpoint, the checkpoint's model weights, the data)."""
    data = with_genres(synth_data, RAW)
    cfg = with_overrides(tiny_cfg, [*ONLINE, "train.seed=7"])
    out = MetaTrainer(cfg, LocalContext(tmp_path / "old"), data).fit()
    return out["checkpoint"], load_model(out["checkpoint"]).model.state_dict(), data


@pytest.mark.parametrize("source", ["run", "checkpoint", "export"])
def test_a_newer_log_starts_from_the_old_model_item_by_raw_id(tiny_cfg, raw_run, tmp_path, source):
    checkpoint, weights, old = raw_run
    path = {"run": tmp_path / "old", "checkpoint": checkpoint, "export": tmp_path / "export"}[source]
    if source == "export":
        export(checkpoint, path)
    new = newer_log(old)
    cfg = with_overrides(tiny_cfg, [*ONLINE, f"train.init_from={path}"])
    state = MetaTrainer(cfg, LocalContext(None), new).model.state_dict()
    fresh = MetaTrainer(with_overrides(cfg, ["train.init_from=null"]), LocalContext(None), new)
    fresh = fresh.model.state_dict()
    v, n = new.num_items, len(NEW)
    there = [RAW.index(r) + 1 for r in new.item_raw_ids[n:]]  # the source's id of each kept item
    emb, src_emb = state["item_emb.weight"], weights["item_emb.weight"]
    assert_same(emb[1 + n : 1 + v], src_emb[there])  # kept items: the source's row of the same raw id
    assert not torch.equal(src_emb[1 + n : 1 + v], src_emb[there])  # ... which is not the same position
    assert_same(emb[1 : 1 + n], fresh["item_emb.weight"][1 : 1 + n])  # new items: fresh
    assert_same(emb[v + 1], src_emb[-1])  # BOS
    assert_same(state["item_factors.weight"][n:], weights["item_factors.weight"][[t - 1 for t in there]])
    assert_same(state["item_factors.weight"][:n], fresh["item_factors.weight"][:n])
    lowrank_itemlr = len(weights["fast_init"]) - len(RAW)
    bias, src_bias = state["fast_init"][lowrank_itemlr:], weights["fast_init"][lowrank_itemlr:]
    assert_same(state["fast_init"][:lowrank_itemlr], weights["fast_init"][:lowrank_itemlr])
    assert_same(bias[n:], src_bias[[t - 1 for t in there]])
    assert_same(bias[:n], fresh["fast_init"][lowrank_itemlr:][:n])
    assert src_bias.abs().sum() > 0  # the source's item biases moved: the test can fail
    for name, value in weights.items():
        if name.startswith(("backbone.", "content.embs.")):  # not item-indexed: the source's
            assert_same(state[name], value)
    # The item features are the new log's (a genre per raw id), never the source's rows.
    for name in ("content.ids_0", "content.has_id"):
        assert_same(state[name], fresh[name])
    assert not torch.equal(state["content.ids_0"][1 : 1 + v], weights["content.ids_0"][1 : 1 + v])
    assert torch.equal(state["content.ids_0"][1 + n : 1 + v], weights["content.ids_0"][there])


def test_the_same_catalogue_loads_as_before_and_a_newer_one_says_what_it_carried(
    tiny_cfg, raw_run, tmp_path, caplog
):
    checkpoint, weights, old = raw_run
    cfg = with_overrides(tiny_cfg, [*ONLINE, f"train.init_from={checkpoint}"])
    same = MetaTrainer(cfg, LocalContext(None), old).model.state_dict()
    for name, value in weights.items():
        assert_same(same[name], value)
    # The same items numbered backwards: matched by raw id, with the item features of this numbering.
    flipped = UserSplits([41 - s for s in old.train], [41 - s for s in old.valid], [], 40)
    state = MetaTrainer(cfg, LocalContext(None), with_genres(flipped, RAW[::-1])).model.state_dict()
    for name in ("item_emb.weight", "content.ids_0"):
        assert_same(state[name][1:41], weights[name][1:41].flip(0))
    assert not torch.equal(state["content.ids_0"], weights["content.ids_0"])  # not the source's rows
    caplog.set_level("INFO", logger="metarec")
    trainer = MetaTrainer(cfg, LocalContext(tmp_path / "new"), newer_log(old))
    assert "6 new items (35 items carried over by raw id, 5 of the source's dropped)" in caplog.text
    said = "35 of this data's 41 items carried over by raw id, 5 of the source's 40 dropped"
    assert any(r.levelname == "WARNING" and said in r.getMessage() for r in caplog.records)  # shown
    assert "data.split=random" not in caplog.text  # the default split (time): no warning
    shuffled = with_overrides(cfg, ["data.split=random"])
    MetaTrainer(shuffled, LocalContext(None), newer_log(old))
    assert "some of this run's validation and test users may be that run's training users" in caplog.text
    # The run trains, and its checkpoint and export record the new log's catalogue.
    out = trainer.fit()
    assert out["step"] == cfg.train.meta_steps
    assert load_model(out["checkpoint"]).meta["item_raw_ids"] == NEW + RAW[5:]
    meta = json.loads((export(out["checkpoint"], tmp_path / "export") / "metarec_config.json").read_text())
    assert meta["item_raw_ids"] == NEW + RAW[5:] and meta["num_items"] == 41


def test_zero_steps_saves_the_old_model_on_the_newer_log_for_evaluation(tiny_cfg, raw_run, tmp_path):
    """``train.meta_steps=0``: the carried-over model, validated and checkpointed at step 0 on the newer
    log's catalogue, so ``metarec evaluate`` scores "the deployed model on the new users" like any run."""
    checkpoint, _, old = raw_run
    cfg = with_overrides(tiny_cfg, [*ONLINE, f"train.init_from={checkpoint}", "train.meta_steps=0"])
    trainer = MetaTrainer(cfg, LocalContext(tmp_path / "untouched"), newer_log(old))
    built = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    out = trainer.fit()
    assert out["step"] == 0 and out["checkpoint"].endswith("step_000000") and "val/ndcg@10@k1" in out
    loaded = load_model(out["checkpoint"])
    assert loaded.meta["item_raw_ids"] == NEW + RAW[5:]
    for name, value in loaded.model.state_dict().items():
        assert_same(value, built[name])  # not a step taken
    with pytest.raises(ValueError, match="train.meta_steps must be >= 0"):
        with_overrides(tiny_cfg, ["train.meta_steps=-1"])


def test_catalogues_that_cannot_be_matched_are_user_errors(tiny_cfg, synth_data, sasrec_run, raw_run):
    checkpoint, _, old = raw_run
    cfg = with_overrides(tiny_cfg, [*ONLINE, f"train.init_from={checkpoint}"])
    other = dataclasses.replace(old, item_raw_ids=[f"x{i}" for i in range(1, 41)])
    with pytest.raises(UserError, match=r"40 items share no raw id with this data's 40 .*other data"):
        MetaTrainer(cfg, LocalContext(None), other)
    with pytest.raises(
        UserError, match="scored 40 items, this data has 41, and this data has no raw item ids"
    ):
        MetaTrainer(cfg, LocalContext(None), dataclasses.replace(newer_log(old), item_raw_ids=None))
    _, _, sasrec_checkpoint = sasrec_run  # synth_data: no raw ids saved
    older = with_overrides(tiny_cfg, [f"train.init_from={sasrec_checkpoint}"])
    with pytest.raises(
        UserError,
        match=r"scored 40 items, this data has 41, and that run's checkpoint does not record its items' "
        r"raw ids \(item_raw_ids",
    ):
        MetaTrainer(older, LocalContext(None), newer_log(dataclasses.replace(synth_data, item_raw_ids=RAW)))


def test_a_source_with_damaged_raw_ids_is_a_user_error(tiny_cfg, raw_run, tmp_path):
    checkpoint, _, old = raw_run
    export(checkpoint, tmp_path / "export")
    config = tmp_path / "export" / "metarec_config.json"
    meta = json.loads(config.read_text())
    meta["item_raw_ids"] = meta["item_raw_ids"][:-1]  # one id short: rows would be read off the table
    config.write_text(json.dumps(meta))
    cfg = with_overrides(tiny_cfg, [*ONLINE, f"train.init_from={tmp_path / 'export'}"])
    with pytest.raises(UserError, match="records 39 raw item ids for its 40 items: a damaged"):
        MetaTrainer(cfg, LocalContext(None), newer_log(old))


def test_feature_values_are_matched_by_label_when_a_newer_log_renumbers_them(tiny_cfg, raw_run, caplog):
    """A newer log's vocabulary is rebuilt from the values it has: here g0 is gone and g4 is new, so the
    table has the same size and every kept value moved down a row. Taken by position, g1's learned row
    would silently become g2's; matched by label, each kept value keeps its own and g4 starts fresh."""
    from metarec_dist.data.features import SPECIALS, EncodedFeature, FeatureTables

    checkpoint, weights, old = raw_run
    new = newer_log(old)
    vocab = [*SPECIALS, "g1", "g2", "g3", "g4"]
    genre = [len(SPECIALS) + int(r[1:]) % 4 for r in new.item_raw_ids]  # g0 -> g4: id 5
    genre = [g if g > len(SPECIALS) else len(vocab) - 1 for g in genre]
    renumbered = [g - 1 if g < len(vocab) - 1 else g for g in genre]
    feature = EncodedFeature("genre", "token", vocab, np.array([0, *renumbered]))
    new = dataclasses.replace(new, features=FeatureTables(item={"genre": feature}))
    cfg = with_overrides(tiny_cfg, [*ONLINE, f"train.init_from={checkpoint}"])
    caplog.set_level("INFO", logger="metarec")
    state = MetaTrainer(cfg, LocalContext(None), new).model.state_dict()
    fresh = MetaTrainer(with_overrides(cfg, ["train.init_from=null"]), LocalContext(None), new)
    table, source = state["content.embs.0.weight"], weights["content.embs.0.weight"]
    assert_same(table[:2], source[:2])  # padding and unknown
    assert_same(table[2:5], source[3:6])  # g1, g2, g3: their own rows, one row up
    assert not torch.equal(source[2:5], source[3:6])  # by position they would differ: the test can fail
    assert_same(table[5], fresh.model.state_dict()["content.embs.0.weight"][5])  # g4: fresh
    assert "content.embs.0.weight (1 new values of item feature 'genre')" in caplog.text
    # The same catalogue with the renumbered vocabulary: the rows by label, the per-item ids this data's.
    ids = [len(SPECIALS) + int(r[1:]) % 4 for r in RAW]
    ids = [g - 1 if g > len(SPECIALS) else len(vocab) - 1 for g in ids]
    same = dataclasses.replace(
        old,
        features=FeatureTables(item={"genre": EncodedFeature("genre", "token", vocab, np.array([0, *ids]))}),
    )
    state = MetaTrainer(cfg, LocalContext(None), same).model.state_dict()
    assert_same(state["content.embs.0.weight"][2:5], source[3:6])
    assert_same(state["content.ids_0"][1:41, 0], torch.tensor(ids))
    assert not torch.equal(state["content.ids_0"], weights["content.ids_0"])  # not the source's ids
    colour = dataclasses.replace(feature, name="colour")
    other = dataclasses.replace(new, features=FeatureTables(item={"colour": colour}))
    with pytest.raises(UserError, match=r"that run's item features are \[\('genre', 'token'\)\], this run's"):
        MetaTrainer(cfg, LocalContext(None), other)


def test_a_source_with_item_features_into_a_run_without_them_names_the_features(tiny_cfg, raw_run):
    """One side declares item features, the other none: the error names the features to declare (it used
    to list the source's content.* tensors as "parameters this one lacks")."""
    checkpoint, _, old = raw_run
    cfg = with_overrides(tiny_cfg, [*ONLINE, f"train.init_from={checkpoint}"])
    with pytest.raises(
        UserError, match=r"that run's item features are \[\('genre', 'token'\)\], this run's \[\]"
    ):
        MetaTrainer(cfg, LocalContext(None), dataclasses.replace(old, features=None))


def test_a_source_sharing_few_of_its_items_by_accident_is_said(tiny_cfg, raw_run, caplog):
    """Numeric raw ids ("1", "2", ...) of another data set can match a small catalogue's all: every item of
    this data carried over, but most of the source's dropped. The warning asks about the source then too."""
    checkpoint, _, old = raw_run
    few = [f"r{i}" for i in range(1, 11)]  # this data: 10 items, all among the source's 40
    keep = [np.array([x for x in s.tolist() if x <= 10] or [1, 2], dtype=s.dtype) for s in old.train]
    small = with_genres(dataclasses.replace(old, train=keep, valid=[], num_items=10), few)
    cfg = with_overrides(tiny_cfg, [*ONLINE, f"train.init_from={checkpoint}"])
    MetaTrainer(cfg, LocalContext(None), small)
    assert "10 of this data's 10 items carried over by raw id, 30 of the source's 40 dropped" in caplog.text
    assert "fewer than half of this data's or of the source's items carried over" in caplog.text


def test_init_from_is_checked_before_any_work_and_a_run_still_training_is_said(
    tiny_cfg, sasrec_run, tmp_path, monkeypatch, caplog
):
    """``metarec train`` checks train.init_from before data, a Ray cluster or its workers (on Ray a wrong
    path took a minute to be reported); a source whose run is still training (its run folder locked) is
    used with a warning naming the step it starts from."""
    from metarec_dist.run_folder import RunLock
    from metarec_dist.train import launch

    def trained(cfg, verbose=False):
        raise AssertionError("trained before train.init_from was checked")

    monkeypatch.setattr(launch, "train_one", trained)
    for path, said in [
        (tmp_path / "nope", "no such file or folder"),
        (tmp_path / "empty", "no complete checkpoint"),
    ]:
        (tmp_path / "empty").mkdir(exist_ok=True)
        (tmp_path / "empty" / "checkpoints" / "step_000005").mkdir(parents=True, exist_ok=True)
        with pytest.raises(UserError, match=f"train.init_from {path}: .*{said}"):
            launch.train(with_overrides(tiny_cfg, [f"train.init_from={path}"]))
    run_dir, _, checkpoint = sasrec_run
    inside = run_dir / "checkpoints"  # where a local run keeps them: the run folder is meant
    with pytest.raises(UserError, match=f"{inside}: not a run folder .*; give its run folder {run_dir}$"):
        launch.train(with_overrides(tiny_cfg, [f"train.init_from={inside}"]))
    cfg = with_overrides(tiny_cfg, [f"train.init_from={run_dir}"])
    with pytest.raises(AssertionError):  # a finished run: no warning, on to training
        launch.train(cfg)
    assert "still training" not in caplog.text
    with RunLock(run_dir), pytest.raises(AssertionError):
        launch.train(cfg)
    assert f"train.init_from {run_dir}: that run is still training (pid {os.getpid()} on" in caplog.text
    assert f"meta-step 3 ({checkpoint})" in caplog.text


def test_a_resume_does_not_need_its_init_from_source(tiny_cfg, synth_data, sasrec_run, tmp_path, monkeypatch):
    """A run that started from train.init_from resumes from its own checkpoint (every weight, frozen ones
    too), so a source deleted meanwhile (a previous model cleaned up) must not stop the resume: it did, with
    "train.init_from ...: no such file or folder"."""
    import shutil

    from metarec_dist.train import launch

    _, _, checkpoint = sasrec_run
    source = tmp_path / "previous-model"
    export(checkpoint, source)
    cfg = with_overrides(tiny_cfg, [f"train.init_from={source}", "train.freeze=[backbone]"])
    run_dir = tmp_path / "next"
    first = MetaTrainer(cfg, LocalContext(run_dir), synth_data).fit()
    frozen = load_model(first["checkpoint"]).model.state_dict()
    shutil.rmtree(source)
    longer = with_overrides(cfg, ["train.meta_steps=5"])
    out = MetaTrainer(longer, LocalContext(run_dir), synth_data).fit()
    assert out["step"] == 5 and out["resumed_from"] == first["step"]
    state = load_model(out["checkpoint"]).model.state_dict()
    assert_same(state["backbone.h.0.attn.c_attn.weight"], frozen["backbone.h.0.attn.c_attn.weight"])
    # `metarec train` does not check a source it will not read either.
    placed = with_overrides(longer, [f"runtime.storage_path={tmp_path}", "runtime.run_name=next"])
    monkeypatch.setattr(launch, "train_one", lambda cfg, verbose=False: {"step": 5})
    assert launch.train(placed)["step"] == 5
    with pytest.raises(UserError, match="no such file or folder"):  # a fresh run still needs it
        launch.train(with_overrides(placed, ["runtime.run_name=fresh"]))


def test_a_freeze_typo_is_named_before_any_data_or_worker(tiny_cfg, monkeypatch):
    """`metarec train` checks train.freeze's names on a meta-device model before it reads data or starts
    Ray (a typo took a 2-worker Ray run 85 s to report); names under the feature parts wait for the real
    model, which has them only when the data declares features."""
    from metarec_dist.train import launch

    monkeypatch.setattr(launch, "train_one", lambda cfg, verbose=False: {"trained": True})
    with pytest.raises(
        UserError, match=r"train\.freeze: no model parameter is named \['backbon'\].*'backbone'"
    ):
        launch.train(with_overrides(tiny_cfg, ["train.freeze=[backbon]"]))
    for fine in ("backbone.h.1", "item_emb", "content.embs", "user_token"):
        assert launch.train(with_overrides(tiny_cfg, [f"train.freeze=[{fine}]"])) == {"trained": True}


def test_the_final_summary_says_what_a_newer_log_carried_over(tiny_cfg, raw_run, tmp_path):
    """The catalogue line was only a worker's log line, and a Ray run's worker logs are quiet by default:
    the training result, and with it `metarec train`'s summary, says where the run started and what it
    carried over."""
    from metarec_dist.train.summary import format_summary

    checkpoint, _, old = raw_run
    cfg = with_overrides(tiny_cfg, [*ONLINE, f"train.init_from={checkpoint}", "train.meta_steps=2"])
    out = MetaTrainer(cfg, LocalContext(tmp_path / "new"), newer_log(old)).fit()
    said = "35 of this data's 41 items carried over by raw id, 6 new, 5 of the source's dropped"
    assert out["init_from"] == f"{checkpoint} ({said})"
    assert f"started:    from {checkpoint} ({said})" in format_summary(out, cfg)
    same = MetaTrainer(cfg, LocalContext(None), old).fit()
    assert same["init_from"] == f"{checkpoint} (the same items)"
