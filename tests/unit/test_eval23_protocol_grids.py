"""The leave-one-out and item protocols (``new-items``, ``mixed``) score the adaptation grid and the fusion
weights in one pass, as the cold-start protocol does (``RankedBatches.run_settings``): each batch encoded
once for the whole grid, and every point's / weight's per-user results those of ``per_user`` /
``adapted_per_user`` run for that setting alone, bit for bit, on tiny trained models. Before, their batches
had no one-pass path and the grid ran point by point (one encoding per batch and point)."""

from __future__ import annotations

import dataclasses

import pytest
from scorers import assert_same_per_user
from test_evalspeed22_shared_passes import _counting_encode, check_grid_in_one_pass
from test_new_items import new_items_run, write_movies

from metarec_dist.eval.cold_start import RankedBatches
from metarec_dist.eval.item_protocol import item_protocol
from metarec_dist.eval.loading import load_model, load_prepared
from metarec_dist.eval.protocol import ColdStartProtocol, LeaveOneOutProtocol

SHOTS = [1, 3, 5]


def _small_batches(protocol: ColdStartProtocol) -> ColdStartProtocol:
    """Batches of 5 users and items ranked 7 at a time: several batches and chunks per evaluation."""
    return dataclasses.replace(
        protocol, eval_cfg=dataclasses.replace(protocol.eval_cfg, batch_users=5, item_chunk=7)
    )


@pytest.fixture(scope="module")
def cold_model(trained):
    run = trained("meta.algorithm=fomaml", "train.meta_steps=4", "data.synthetic_users=120")
    loaded = load_model(run.checkpoint)
    return loaded, load_prepared(loaded.cfg).user_splits()


@pytest.fixture(scope="module")
def item_model(trained, tmp_path_factory):
    movies = write_movies(tmp_path_factory.mktemp("data") / "movies")
    run = trained(*new_items_run(movies), "train.meta_steps=4")
    loaded = load_model(run.checkpoint)
    return loaded, load_prepared(loaded.cfg).user_splits()


def _loo(cold_model, mask_seen: bool = True) -> tuple:
    loaded, splits = cold_model
    protocol = LeaveOneOutProtocol.build(splits, loaded.cfg.model.max_seq_len, loaded.cfg.eval, mask_seen)
    return loaded, _small_batches(protocol)


def _items(item_model, name: str) -> tuple:
    loaded, splits = item_model
    cfg = loaded.cfg
    return loaded, _small_batches(item_protocol(name, splits, SHOTS, cfg.tasks.support_max, cfg.eval))


def _check_grid(loaded, protocol: ColdStartProtocol, monkeypatch) -> None:
    batches = protocol.batches(protocol.tune_users(), user_features=protocol.tune_user_features())
    assert isinstance(batches, RankedBatches) and len(batches) > 1
    check_grid_in_one_pass(loaded, protocol, monkeypatch)


def _check_fusion(loaded, protocol: ColdStartProtocol, monkeypatch) -> None:
    adaptation = protocol.choose_adaptation(loaded)
    users, feats = protocol.tune_users(), protocol.tune_user_features()
    weights = [0.0, 0.25, 1.0, 2.0]
    fresh = dataclasses.replace(protocol, memo=None)  # nothing kept: each weight computed
    calls = _counting_encode(monkeypatch)
    shared = fresh.fused_results(loaded, adaptation, weights, users, feats)
    assert calls[0] == len(fresh.batches(users, user_features=feats))  # one adaptation for all weights
    monkeypatch.undo()
    for weight, got in zip(weights, shared, strict=True):
        want = fresh.adapted_per_user(loaded, dataclasses.replace(adaptation, fusion=weight), users, feats)
        assert_same_per_user(got, want)


@pytest.mark.parametrize("mask_seen", [True, False])
def test_loo_grid_in_one_pass_equals_each_point_alone(cold_model, mask_seen, monkeypatch):
    loaded, protocol = _loo(cold_model, mask_seen)
    _check_grid(loaded, protocol, monkeypatch)


def test_loo_fusion_weights_in_one_pass_equal_each_weight_alone(cold_model, monkeypatch):
    _check_fusion(*_loo(cold_model), monkeypatch)


@pytest.mark.parametrize("name", ["new-items", "mixed"])
def test_item_protocol_grid_in_one_pass_equals_each_point_alone(item_model, name, monkeypatch):
    loaded, protocol = _items(item_model, name)
    _check_grid(loaded, protocol, monkeypatch)


def test_mixed_fusion_weights_in_one_pass_equal_each_weight_alone(item_model, monkeypatch):
    _check_fusion(*_items(item_model, "mixed"), monkeypatch)


def test_batches_that_score_their_own_way_get_no_one_pass(cold_model):
    """Batches whose ``run`` is not ``RankedBatches.run`` could rank a setting differently in one pass
    than alone: the grid then runs point by point."""
    loaded, protocol = _loo(cold_model)

    class OwnRun(type(protocol.batches(protocol.tune_users()))):
        def run(self, scorer, index, steps):
            return super().run(scorer, index, steps)

    class Own(LeaveOneOutProtocol):
        def batches(self, *args, **kwargs):
            built = super().batches(*args, **kwargs)
            return OwnRun(**{f.name: getattr(built, f.name) for f in dataclasses.fields(built)})

    own = Own(protocol.splits, protocol.shots, protocol.support_max, protocol.eval_cfg, memo=None)
    assert own.per_setting(None, own.tune_users(), None) is None
    got = own.grid_results(loaded, [(0, 0.5), (1, 0.5)], own.tune_users())
    want = protocol.grid_results(loaded, [(0, 0.5), (1, 0.5)], protocol.tune_users())
    for point in want:
        assert_same_per_user(got[point], want[point])


@pytest.mark.parametrize("name", ["loo", "new-items", "mixed"])
def test_eval_bench_compares_both_ways_under_the_other_protocols(name):
    """``run_eval_bench(protocol_name=...)`` on a tiny generated set: every phase timed, and the one-pass
    results checked against the point-by-point ones (no timing is asserted)."""
    from metarec_dist.bench.eval_bench import run_eval_bench

    out = run_eval_bench(items=120, valid_users=12, test_users=10, compare=True, protocol_name=name)
    assert out["protocol"] == name and out["grid_points"] == 17
    assert out["adaptation_identical"] is True and out["fusion_identical"] is True
    assert out["fused_test_identical"] is True
    assert out["shots"] == ([0] if name == "loo" else [1, 3, 5, 10])
    assert len(out["phases"]) == 7 and all(p["users_per_s"] > 0 for p in out["phases"].values())


def test_eval_bench_refuses_an_unknown_protocol():
    from metarec_dist.bench.eval_bench import run_eval_bench
    from metarec_dist.errors import UserError

    with pytest.raises(UserError, match="protocol: 'warm' is not one of cold_start, loo, new-items, mixed"):
        run_eval_bench(items=120, valid_users=12, test_users=10, protocol_name="warm")
