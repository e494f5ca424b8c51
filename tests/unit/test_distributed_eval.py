"""Distributed evaluation gives the single-process numbers: the user batches scored over 2 gloo ranks
(periodic validation in a training job; cold-start, leave-one-out and the mixed item protocol) and on 2 Ray
actors (``eval.workers: 2``: the adaptation grid search and the test users of ``metarec evaluate``) equal the
in-process loop exactly, per user."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from metarec_dist.bench.scale import exit_rank_process
from metarec_dist.config import load_config
from metarec_dist.data import prepare_data
from metarec_dist.eval.cold_start import PerUser
from metarec_dist.eval.distributed import AcrossRanks, InProcess
from metarec_dist.eval.item_protocol import MixedProtocol
from metarec_dist.eval.loading import LoadedModel
from metarec_dist.eval.protocol import AdaptingScorer, ColdStartProtocol, Diverged, LeaveOneOutProtocol
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.runtime.context import WorkerContext

SHOTS = [1, 3, 5]


def _setup(tmp: Path, batch_users: int = 7) -> tuple[LoadedModel, ColdStartProtocol]:
    """An untrained tiny model (its scores are as good as a trained one's for equality) on the synthetic
    data, users in batches of ``batch_users`` so that every shot count has several batches."""
    cfg = load_config(
        "configs/tiny.yaml",
        [
            "data.synthetic_users=200",
            "data.cache=false",
            f"eval.batch_users={batch_users}",
            "eval.item_chunk=64",
        ],
    )
    splits = prepare_data(cfg.data).user_splits()
    torch.manual_seed(0)  # every process builds the same model
    model = SeqRecommender(cfg.model, splits.num_items, seed=0).eval()
    loaded = LoadedModel(model=model, cfg=cfg, meta={"num_items": splits.num_items}, source=tmp)
    return loaded, ColdStartProtocol(splits, SHOTS, cfg.tasks.support_max, cfg.eval)


def _assert_equal(a: PerUser, b: PerUser) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].keys() == b[k].keys()
        for name in a[k]:
            np.testing.assert_array_equal(a[k][name], b[k][name], err_msg=f"K={k} {name}")


class _Rank(WorkerContext):
    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size


def _rank_main(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        loaded, protocol = _setup(Path(out_dir))
        runner = AcrossRanks(_Rank(rank, 2))
        valid = protocol.splits.valid
        res = protocol.per_user(protocol.scorer(loaded, 0.5), valid, steps=3, runner=runner)
        loo = LeaveOneOutProtocol.build(protocol.splits, 11, protocol.eval_cfg)
        res_loo = loo.per_user(protocol.scorer(loaded, 0.5), valid, steps=1, runner=runner)
        res_mixed = _mixed(protocol).per_user(protocol.scorer(loaded, 0.5), valid, steps=1, runner=runner)
        try:  # a failure on one rank only: raised on both, after the gather (nobody is left waiting)
            protocol.per_user(_FailsOnRank(rank, protocol.splits.num_items), valid, runner=runner)
            failed = "no error"
        except RuntimeError as exc:
            failed = str(exc)
        got = {"cold": res, "loo": res_loo, "mixed": res_mixed, "failed": failed}
        torch.save(got, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
    exit_rank_process()  # no interpreter teardown: gloo work freed there can abort a finished rank


def _mixed(protocol: ColdStartProtocol) -> MixedProtocol:
    """The mixed item protocol on the same users, the last fifth of the items taken as "new" (the model was
    not trained without them, which equality does not need)."""
    n = protocol.splits.num_items
    splits = dataclasses.replace(protocol.splits, new_items=np.arange(n - n // 5 + 1, n + 1))
    return MixedProtocol.build(splits, SHOTS, protocol.support_max, protocol.eval_cfg)


class _FailsOnRank:
    def __init__(self, rank: int, num_items: int) -> None:
        self.rank, self.num_items = rank, num_items

    def score(self, batch, steps=None):
        if self.rank == 1:
            raise RuntimeError("scorer broke on rank 1")
        return torch.zeros(batch.num_tasks, self.num_items)


@pytest.mark.integration  # two gloo processes
def test_validation_batches_over_two_gloo_ranks_equal_one_process(tmp_path):
    torch.set_num_threads(1)
    loaded, protocol = _setup(tmp_path)
    valid = protocol.splits.valid
    batches = protocol.batches(valid)
    assert len(batches) >= 5 and len(batches) % 2  # several batches, one rank pads
    mp.start_processes(
        _rank_main, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    want = protocol.per_user(protocol.scorer(loaded, 0.5), valid, steps=3, runner=InProcess())
    loo = LeaveOneOutProtocol.build(protocol.splits, 11, protocol.eval_cfg)
    want_loo = loo.per_user(protocol.scorer(loaded, 0.5), valid, steps=1, runner=InProcess())
    want_mixed = _mixed(protocol).per_user(protocol.scorer(loaded, 0.5), valid, steps=1, runner=InProcess())
    assert "new@10" in want_mixed[1]
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        _assert_equal(got["cold"], want)
        _assert_equal(got["loo"], want_loo)
        _assert_equal(got["mixed"], want_mixed)
        assert got["failed"] == "scorer broke on rank 1"
    assert sum(len(v["ndcg@10"]) for v in want.values()) > 40


def test_in_process_runner_is_the_plain_loop(tmp_path):
    """eval.workers: 1 (the default) runs the batches here, one after the other: no Ray."""
    loaded, protocol = _setup(tmp_path, batch_users=256)
    assert isinstance(protocol.eval_cfg.workers, int) and protocol.eval_cfg.workers == 1
    res = protocol.per_user(protocol.scorer(loaded, 0.5), protocol.splits.valid, steps=0)
    assert set(res) == set(SHOTS) and all(len(r["ndcg@10"]) for r in res.values())


@pytest.mark.integration  # a Ray local cluster
@pytest.mark.skipif(os.cpu_count() < 2, reason="two evaluation actors need two CPUs")
def test_grid_search_and_test_users_on_two_ray_actors_equal_one_process(tmp_path):
    """``eval.workers: 2``: the 17-setting adaptation grid on validation users and the test users scored on
    Ray actors give the in-process adaptation, validation score and per-user test metrics, bit for bit; a
    diverging setting is raised as ``Diverged`` from the actors as it is here."""
    import ray

    from metarec_dist.runtime.eval_pool import close_actor_pool

    loaded, local = _setup(tmp_path)
    want = local.evaluate(loaded, "test")
    cfg = dataclasses.replace(local.eval_cfg, workers=2)
    remote = dataclasses.replace(local, eval_cfg=cfg)
    try:
        got = remote.evaluate(loaded, "test")
        assert got.info == want.info and got.info["adaptation"]["grid_size"] == 17
        _assert_equal(got.per_user, want.per_user)
        _assert_equal(remote.popularity("test").per_user, local.popularity("test").per_user)
        wild = AdaptingScorer(loaded.model, "fomaml", 1e30)
        with pytest.raises(Diverged):
            remote.per_user(wild, local.splits.valid, steps=10)
    finally:
        close_actor_pool()
        ray.shutdown()
