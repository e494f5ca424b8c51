"""The evaluation's one-pass paths give the point-by-point numbers exactly: the adaptation grid (one
encoding per batch, one trajectory per inner lr: ``GridScorer``) and the fusion weights (one adaptation per
batch for every weight: ``FusionWeights``) equal ``per_user`` / ``adapted_per_user`` run for each setting
alone, per user, bit for bit, on a tiny trained model; a diverging grid point drops out on its own."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from scorers import assert_same_per_user

from metarec_dist.eval.cold_start import StateMemo
from metarec_dist.eval.loading import load_model, load_prepared
from metarec_dist.eval.protocol import Adaptation, ColdStartProtocol, Diverged, adaptation_grid
from metarec_dist.eval.reproduce import build_protocol
from metarec_dist.models.recommender import SeqRecommender, UserState

SHOTS = [1, 3, 5]


def _trained(trained, algorithm: str) -> tuple:
    """A trained tiny model of ``algorithm``, its users in batches of 5 (several batches per shot count)."""
    run = trained(f"meta.algorithm={algorithm}", "train.meta_steps=4", "data.synthetic_users=120")
    loaded = load_model(run.checkpoint)
    splits = load_prepared(loaded.cfg).user_splits()
    protocol = build_protocol("cold_start", splits, SHOTS, loaded.cfg)
    cfg = dataclasses.replace(protocol.eval_cfg, batch_users=5, item_chunk=7)
    return loaded, dataclasses.replace(protocol, eval_cfg=cfg)


@pytest.fixture(scope="module")
def setup(request):
    """A trained tiny FOMAML model (see ``_trained``)."""
    return _trained(request.getfixturevalue("trained"), "fomaml")


def _counting_encode(monkeypatch) -> list[int]:
    calls = [0]
    encode = SeqRecommender.encode

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(SeqRecommender, "encode", counted)
    return calls


# The trained grid plus an lr so large that its longer trajectories diverge (not candidates).
GRID = sorted([*adaptation_grid(3, 0.5, finetune=False), (1, 1e30), (10, 1e30)])


def check_grid_in_one_pass(loaded, protocol: ColdStartProtocol, monkeypatch) -> None:
    """``protocol.grid_results`` over ``GRID`` encodes each batch once, and every point's per-user results
    are that point's scored alone with nothing kept (a diverged point: None, as alone it raises)."""
    users, feats = protocol.tune_users(), protocol.tune_user_features()
    calls = _counting_encode(monkeypatch)
    shared = protocol.grid_results(loaded, GRID, users)
    assert calls[0] == len(protocol.batches(users, user_features=feats))  # not once per batch and point
    monkeypatch.undo()
    diverged, fresh = [], dataclasses.replace(protocol, memo=None)  # nothing kept: each point computed
    for steps, lr in GRID:
        try:
            alone = fresh.per_user(fresh.scorer(loaded, lr), users, steps, user_features=feats)
        except Diverged:
            diverged.append((steps, lr))
            assert shared[steps, lr] is None
            continue
        assert_same_per_user(shared[steps, lr], alone)
    assert (10, 1e30) in diverged and len(diverged) < len(GRID)


@pytest.mark.parametrize("algorithm", ["fomaml", "metasgd", "hyperfomaml"])
def test_grid_in_one_pass_equals_each_point_alone(trained, algorithm, monkeypatch):
    """Also Meta-SGD (learned per-weight rates: the lr is a tensor) and HyperFOMAML (a generated init)."""
    loaded, protocol = _trained(trained, algorithm)
    check_grid_in_one_pass(loaded, protocol, monkeypatch)


@pytest.mark.parametrize("mode", ["shared", "per_shot"])
def test_fusion_weights_in_one_pass_equal_each_weight_alone(setup, mode):
    loaded, protocol = setup
    protocol = dataclasses.replace(protocol, eval_cfg=dataclasses.replace(protocol.eval_cfg, adaptation=mode))
    adaptation = protocol.choose_adaptation(loaded)
    if mode == "per_shot":  # two settings, so the shots are scored in two groups
        adaptation = dataclasses.replace(
            adaptation, per_shot={1: (0, 0.5, 0.0), 3: (3, 0.5, 0.0), 5: (1, 1.0, 0.0)}
        )
    users, feats = protocol.tune_users(), protocol.tune_user_features()
    weights = [0.0, 0.25, 1.0, 2.0]
    shared = protocol.fused_results(loaded, adaptation, weights, users, feats)
    fresh = dataclasses.replace(protocol, memo=None)
    for weight, got in zip(weights, shared, strict=True):
        want = fresh.adapted_per_user(loaded, dataclasses.replace(adaptation, fusion=weight), users, feats)
        assert_same_per_user(got, want)


def test_protocol_without_the_one_pass_path_scores_point_by_point(setup):
    """A protocol that scores users its own way (here: a ``per_user`` override) gets no shared pass; the
    grid is then scored point by point through its ``per_user``."""
    loaded, protocol = setup
    seen = []

    class Own(ColdStartProtocol):
        def per_user(self, scorer, sequences, steps=0, *args, **kwargs):
            seen.append(steps)
            return super().per_user(scorer, sequences, steps, *args, **kwargs)

    own = Own(protocol.splits, SHOTS, protocol.support_max, protocol.eval_cfg, memo=None)
    grid = [(0, 0.5), (1, 0.5), (3, 0.5)]
    got = own.grid_results(loaded, grid, own.tune_users())
    assert seen == [0, 1, 3]
    want = protocol.grid_results(loaded, grid, protocol.tune_users())
    for point in grid:
        assert_same_per_user(got[point], want[point])


def test_plain_then_fused_as_the_reproduction_runs_them_equal_a_fresh_evaluation(setup, monkeypatch):
    """The reproduction's variants (plain, then fused at the same adaptation): the fused variant reads the
    states the grid and the plain test pass kept, encodes nothing, and its choice, validation score and
    per-user test metrics are those of the same evaluation with nothing kept."""
    loaded, protocol = setup
    protocol = dataclasses.replace(protocol, memo=StateMemo())
    fresh = dataclasses.replace(protocol, memo=None)
    adaptation = protocol.choose_adaptation(loaded)
    plain = protocol.evaluate(loaded, "test", adaptation=adaptation)
    calls = _counting_encode(monkeypatch)
    fused = protocol.evaluate(loaded, "test", fuse=True, adaptation=adaptation)
    assert calls[0] == 0  # the tuning and test users' states at this adaptation were all kept
    monkeypatch.undo()
    want_adaptation = fresh.choose_adaptation(loaded)
    assert want_adaptation == adaptation
    assert_same_per_user(plain.per_user, fresh.evaluate(loaded, "test", adaptation=adaptation).per_user)
    want = fresh.evaluate(loaded, "test", fuse=True, adaptation=adaptation)
    assert fused.info == want.info
    assert_same_per_user(fused.per_user, want.per_user)


def test_memo_misses_after_a_weight_changes_in_place(setup):
    """A weight changed in place (an optimizer step, ``load_state_dict``) is a new model to the memo."""
    loaded, protocol = setup
    model = copy.deepcopy(loaded.model)
    mine = dataclasses.replace(loaded, model=model)
    protocol = dataclasses.replace(protocol, memo=StateMemo())
    users = protocol.users("test")
    before = protocol.adapted_per_user(mine, Adaptation(1, 0.5), users)
    with torch.no_grad():
        model.fast_init.mul_(3.0)
    after = protocol.adapted_per_user(mine, Adaptation(1, 0.5), users)
    want = dataclasses.replace(protocol, memo=None).adapted_per_user(mine, Adaptation(1, 0.5), users)
    assert_same_per_user(after, want)
    assert any(not np.array_equal(before[k]["ndcg@10"], after[k]["ndcg@10"]) for k in SHOTS if before[k])


def test_memo_keeps_no_more_than_its_bound_and_pickles_empty():
    import pickle

    memo = StateMemo(max_bytes=3 * 4 * 10)
    model = torch.nn.Linear(2, 2)
    for i in range(5):
        memo.put(model, bytes([i]), UserState(torch.zeros(1, 10), None))
    assert memo.bytes <= memo.max_bytes and len(memo.entries) == 3
    assert memo.get(model, bytes([4])) is not None and memo.get(model, bytes([0])) is None
    assert memo.get(torch.nn.Linear(2, 2), bytes([4])) is None  # another model: never its entries
    assert pickle.loads(pickle.dumps(memo)).entries == {}
    gone = torch.nn.Linear(2, 2)
    memo = StateMemo(max_bytes=3 * 4 * 10)
    memo.put(model, b"kept", UserState(torch.zeros(1, 10), None))
    memo.put(gone, b"gone", UserState(torch.zeros(1, 10), None))
    del gone  # a model no longer alive: its entries leave before any other
    for i in range(2):
        memo.put(model, bytes([i]), UserState(torch.zeros(1, 10), None))
    assert set(memo.entries) == {b"kept", bytes([0]), bytes([1])}


def test_eval_bench_reports_every_phase_and_the_same_numbers_both_ways():
    """``metarec bench eval --compare`` on a tiny generated set: every phase timed, and the one-pass choices
    checked against the point-by-point ones (no timing is asserted)."""
    from metarec_dist.bench.eval_bench import run_eval_bench

    out = run_eval_bench(items=60, valid_users=12, test_users=10, compare=True)
    assert out["adaptation_identical"] is True and out["fusion_identical"] is True
    assert out["fused_test_identical"] is True
    assert set(out["phases"]) == {
        "adaptation_point_by_point",
        "adaptation",
        "test",
        "fusion_point_by_point",
        "fusion",
        "fused_test_adapting_again",
        "fused_test",
    }
    assert out["grid_points"] == 17 and out["tune_users"] == 12 and out["test_users"] == 10
    assert all(p["users_per_s"] > 0 for p in out["phases"].values())


def test_eval_bench_refuses_sizes_it_cannot_run(capsys):
    from metarec_dist.cli import main

    assert main(["bench", "eval", "--valid-users", "0"]) != 0
    assert "--valid-users must be >= 1, got 0" in capsys.readouterr().err
