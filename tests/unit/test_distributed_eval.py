"""Distributed evaluation gives the single-process numbers: the user batches scored over 2 gloo ranks
(periodic validation in a training job; cold-start, leave-one-out and the mixed item protocol) and on 2 Ray
actors (``eval.workers: 2``: the adaptation grid search and the test users of ``metarec evaluate``) equal the
in-process loop exactly, per user."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scorers import assert_same_per_user

from metarec_dist.bench.scale import exit_rank_process
from metarec_dist.config import load_config
from metarec_dist.data import prepare_data
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
        assert_same_per_user(got["cold"], want)
        assert_same_per_user(got["loo"], want_loo)
        assert_same_per_user(got["mixed"], want_mixed)
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
        assert_same_per_user(got.per_user, want.per_user)
        assert_same_per_user(remote.popularity("test").per_user, local.popularity("test").per_user)
        wild = AdaptingScorer(loaded.model, "fomaml", 1e30)
        with pytest.raises(Diverged):
            remote.per_user(wild, local.splits.valid, steps=10)
    finally:
        close_actor_pool()
        ray.shutdown()


def test_an_interrupted_actor_pool_stops_its_actors_instead_of_waiting_for_their_queue(monkeypatch):
    """Ctrl-C during ``ActorPool.map``: the actors are killed at once. An ``unload`` call would queue behind
    the IN_FLIGHT batches each actor still has to run, and Ctrl-C would wait for them."""
    from metarec_dist.runtime import eval_pool

    calls: list[str] = []

    class Method:
        def __init__(self, name: str) -> None:
            self.name = name

        def remote(self, *args):
            calls.append(self.name)
            return object()

    class Actor:
        def __getattr__(self, name: str) -> Method:
            return Method(name)

    class FakeRay:
        def put(self, value):
            return value

        def get(self, refs):
            return None

        def wait(self, refs, num_returns):
            raise KeyboardInterrupt

        def is_initialized(self):
            return True

        def kill(self, actor):
            calls.append("kill")

    monkeypatch.setattr(eval_pool, "ray", FakeRay())
    pool = object.__new__(eval_pool.ActorPool)
    pool.workers, pool.actors = 2, [Actor(), Actor()]
    with pytest.raises(KeyboardInterrupt):
        pool.map(lambda payload, i: i, None, 10)
    assert calls.count("run") == 4 and "unload" not in calls and calls.count("kill") == 2
    assert pool.actors == []


def test_sigterm_stops_evaluate_with_one_line_and_status_130(tmp_path):
    """``kill`` on ``metarec evaluate --workers N``: the same clean stop as Ctrl-C (status 130, one line,
    the actors stopped), not Ray's stack dump and abort (status 134) or a silent death by the signal."""
    script = f"""
import os, signal, sys
from metarec_dist import cli
from metarec_dist.eval import cli as ecli, distributed

def evaluate(args):
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()  # the handler raises; without one, the signal ends the process

ecli._evaluate = evaluate
distributed.close_runners = lambda: print("closed", file=sys.stderr)
sys.exit(cli.main(["evaluate", "--checkpoint", "x", "--json", {str(tmp_path / "e.json")!r}]))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 130, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("interrupted: the evaluation stopped") and "e.json not written" in lines[0]
    assert lines[-1] == "closed" and "Traceback" not in done.stderr


def test_evaluate_with_workers_names_a_wrong_checkpoint_before_starting_ray(tmp_path, monkeypatch, capsys):
    """--workers N starts the actors before the data is read (too few CPUs fails at once), but a wrong
    --checkpoint is named before that, not after a Ray cluster has started."""
    from metarec_dist.cli import main
    from metarec_dist.eval import distributed

    def started(workers):
        raise AssertionError("Ray started before --checkpoint was checked")

    monkeypatch.setattr(distributed, "runner_for", started)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope"), "--workers", "2"]) == 2
    assert f"--checkpoint {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err
