"""Ray Train + DeepSpeed (gloo, 2 CPU workers) against the single-process trainer, checkpoints, failover."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from metarec_dist import checkpoint as ckpt
from metarec_dist.config import config_to_yaml, load_config
from metarec_dist.data import prepare_data
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.runtime.context import LocalContext
from metarec_dist.runtime.ray_launcher import train_on_ray
from metarec_dist.train.trainer import MetaTrainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from feature_data import feature_config  # noqa: E402
from trained import TINY_MODEL  # noqa: E402

pytestmark = pytest.mark.integration

BASE = [
    *TINY_MODEL,
    "train.log_every=1",
    "data.format=synthetic",
    "data.synthetic_users=80",
    "data.synthetic_items=40",
    "data.cache=false",
    "optim.lr=0.01",
    "optim.schedule=constant",
    "train.eval_users=16",
]
# fp32 everywhere; the two runs differ only in the order floating-point sums are taken (gloo all-reduce
# vs one process), so parameters agree to about 1e-6 after a few Adam steps.
ATOL = 1e-5


def _cfg(tmp_path, *extra):
    return load_config("configs/tiny.yaml", [*BASE, f"runtime.storage_path={tmp_path}", *extra])


def _feature_cfg(tmp_path, *extra):
    """The same run on the side-information data set (tests/feature_data.py): user token, gated item
    content with genres, year buckets and hashed titles."""
    base = [o for o in BASE if not o.startswith("data.")]
    return feature_config(
        tmp_path,
        [*base, f"runtime.storage_path={tmp_path}", "model.item_content=gated", *extra],
        base="configs/tiny.yaml",
    )


def _single_process(cfg, result: dict | None = None) -> dict[str, torch.Tensor]:
    """One process; with ``tasks.shards=2`` it samples as 2 ranks would (each rank's users and seed).
    ``result``: filled with the run's final metrics."""
    cfg.runtime.backend, cfg.runtime.num_workers = "local", 1
    trainer = MetaTrainer(cfg, LocalContext(None), prepare_data(cfg.data).user_splits())
    (result if result is not None else {}).update(trainer.fit())
    return {k: v.detach() for k, v in _learner_state(trainer).items()}


def _learner_state(trainer: MetaTrainer) -> dict[str, torch.Tensor]:
    """The model's parameters and the algorithm's own (``algorithm.`` prefix), as exported."""
    algorithm = {f"algorithm.{k}": v for k, v in trainer.algorithm.state_dict().items()}
    return {**trainer.model.state_dict(), **algorithm}


def _exported(checkpoint: str, tmp_path: Path) -> dict[str, torch.Tensor]:
    exported = ckpt.load_exported(ckpt.export(Path(checkpoint), tmp_path / "export"))
    return {
        **exported.model.state_dict(),
        **{f"algorithm.{k}": v for k, v in exported.algorithm_state.items()},
    }


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(_no_key_bias(k, a[k]), _no_key_bias(k, b[k]), atol=ATOL, rtol=1e-5, msg=k)


def _no_key_bias(name: str, value: torch.Tensor) -> torch.Tensor:
    """GPT-2's attention key bias (the middle third of ``c_attn.bias``) has a zero gradient in exact
    arithmetic (a softmax row is shift-invariant); Adam scales its rounding noise, which differs between a
    gloo all-reduce and one process, up to ~2e-5 after two steps from trained weights. Compared as zero."""
    if not name.endswith("attn.c_attn.bias"):
        return value
    n = value.numel() // 3
    return torch.cat([value[:n], torch.zeros_like(value[n : 2 * n]), value[2 * n :]])


# ZeRO-3 also runs parameters read outside their module's forward: Meta-SGD's learned inner lr (owned by the
# algorithm), the item-side adapter's slow item factors (owned by the model); and the context encoder, a
# module the algorithm owns, called inside the meta-learner's forward. With them the extra query loss at the
# un-adapted weights and the dense term (a set loss over each position's next 3 items, seen items excluded).
# Each: the algorithm parameter that must have been trained. The Meta-SGD run's final validation searches the
# adaptation grid (train.eval_adaptation: searched): every batch one collective forward scoring every point,
# the learned rates read inside it at each candidate lr.
ZERO3_VARIANTS = {
    "metasgd": (
        [
            "train.eval_adaptation=searched",
            "meta.algorithm=metasgd",
            "meta.init_query_weight=0.5",
            "meta.dense_weight=0.7",
            "meta.dense_horizon=3",
            "meta.dense_exclude_seen=true",
        ],
        "algorithm.inner_lr_log_scale",
    ),
    "context": (
        ["meta.algorithm=hypermetasgd", "model.adapters=[lowrank,itemlr]", "meta.init_query_weight=0.5"],
        "algorithm.context.out.weight",
    ),
}


def _ray_args(stage: int, run_name: str, *extra: str) -> list[str]:
    return [
        "runtime.backend=ray",
        "runtime.num_workers=2",
        f"runtime.zero_stage={stage}",
        f"runtime.run_name={run_name}",
        *extra,
    ]


def _zero_run(storage: Path, stage: int, options: list[str], run_name: str) -> dict:
    """A 3-step run on 2 ranks: its result, exported state, manifest files and their modes, read at once
    (before anything resumes the run)."""
    out = train_on_ray(_cfg(storage, *_ray_args(stage, run_name, "train.meta_steps=3", *options)))
    files = json.loads((Path(out["checkpoint"]) / "manifest.json").read_text())["files"]
    modes = {rel: oct((Path(out["checkpoint"]) / rel).stat().st_mode & 0o777) for rel in files}
    return {"out": out, "state": _exported(out["checkpoint"], storage), "files": files, "modes": modes}


@pytest.fixture(scope="module")
def zero2(ray_cluster, tmp_path_factory) -> dict:
    """The ZeRO-2 run, shared by the single-process comparison and the resume test (which continues it)."""
    storage = tmp_path_factory.mktemp("zero2")
    return {**_zero_run(storage, 2, [], "zero2"), "storage": storage}


@pytest.mark.parametrize("stage,variant", [(0, None), (2, None), (3, "metasgd"), (3, "context")])
def test_zero_stage_matches_single_process(ray_cluster, request, tmp_path, stage, variant):
    options, trained = ZERO3_VARIANTS[variant] if variant else ([], None)
    if stage == 2:
        run = request.getfixturevalue("zero2")
    else:
        run = _zero_run(tmp_path, stage, options, f"zero{stage}{variant or ''}")
    assert run["out"]["step"] == 3
    distributed = run["state"]
    one = _cfg(tmp_path, "train.meta_steps=3", "tasks.shards=2", *options)
    single: dict = {}
    _assert_same(distributed, _single_process(one, single))
    if variant == "metasgd":  # the searched validation: the same choices and scores as one process
        searched = {k: v for k, v in single.items() if k.startswith("val/")}
        assert "val/adapt_steps@k3" in searched
        assert {k: run["out"][k] for k in searched} == pytest.approx(searched, abs=1e-4)
    if trained:  # the algorithm's own parameter was trained, not just carried along (the encoder's output
        assert distributed[trained].abs().max() > 0  # layer starts at zero, the log-rates at zero)
    if variant == "context":
        assert distributed["item_factors.weight"].shape[1] == 2  # model.adapter_rank
    files = run["files"]
    if stage == 3:  # one model and one optimizer shard per rank
        for r in (0, 1):
            assert f"engine/state/zero_pp_rank_{r}_mp_rank_00_model_states.pt" in files
            assert f"engine/state/zero_pp_rank_{r}_mp_rank_00_optim_states.pt" in files
    assert {"client_state.json", "rng_rank0.safetensors", "rng_rank1.safetensors"} <= set(files)
    # Ray's copy into storage is private like a local checkpoint (issue 12): 0600 files
    assert set(run["modes"].values()) == {"0o600"}, run["modes"]


@pytest.mark.parametrize("stage,protocol", [(2, "cold_start"), (3, "new_items")])
def test_zero_with_features_matches_single_process(ray_cluster, tmp_path, stage, protocol):
    """Side information on 2 gloo ranks under ZeRO-2/3: the content embeddings and the gate are read through
    the tied score table (external parameters), the user token before BOS; the feature tables reach the
    Ray workers; the export holds the same weights and feature-id buffers as a single process. ZeRO-3 runs
    on the new-items split: the held-out items are no candidate of the training softmax
    (``model.unseen_items: auto`` -> ``exclude``, built from the union of the ranks' items), so their id
    rows keep their initial values on every rank's shard of the table."""
    split = [f"data.protocol={protocol}"]
    if protocol == "new_items":  # half the 40 items held out: the periodic validation ranks eval.ks of them
        split += ["data.new_item_frac=0.5", "eval.ks=[5]"]
    args = [
        "runtime.backend=ray",
        "runtime.num_workers=2",
        f"runtime.zero_stage={stage}",
        "train.meta_steps=3",
        *split,
    ]
    out = train_on_ray(_feature_cfg(tmp_path, *args, f"runtime.run_name=zero{stage}-features"))
    assert out["step"] == 3
    distributed = _exported(out["checkpoint"], tmp_path)
    assert any(k.startswith("content.") for k in distributed) and any(
        k.startswith("user_token.") for k in distributed
    )
    # `content.has_id` (the items with a trained id row) is compared too: the union over every rank's users
    one = _feature_cfg(tmp_path, "train.meta_steps=3", "tasks.shards=2", *split)
    _assert_same(distributed, _single_process(one))
    if protocol == "new_items":
        assert one.model.unseen_items == "exclude"
        data = prepare_data(one.data).user_splits()
        new = torch.as_tensor(data.new_items)
        assert len(new) and not distributed["content.has_id"][new].any()
        torch.manual_seed(one.train.seed)  # as MetaTrainer: the rows' initial values
        init = SeqRecommender.for_data(one.model, data.num_items, data.features, data.train, one.train.seed)
        torch.testing.assert_close(
            distributed["item_emb.weight"][new], init.item_emb.weight[new], rtol=0, atol=0
        )
        assert not torch.allclose(distributed["item_emb.weight"], init.item_emb.weight)  # the others trained


def test_one_rank_zero0_engine_skips_the_all_reduce_and_matches_local(tmp_path):
    """With one data-parallel rank the DeepSpeed ZeRO-0 engine does no gradient all-reduce (nothing to
    reduce) and still trains exactly like the plain in-process engine."""
    trainer = MetaTrainer(
        _cfg(tmp_path, "runtime.deepspeed=true", "runtime.zero_stage=0", "train.meta_steps=3"),
        LocalContext(None),
        prepare_data(_cfg(tmp_path).data).user_splits(),
    )
    assert trainer.engine.engine.enable_backward_allreduce is False
    trainer.fit()
    deepspeed = {k: v.detach() for k, v in _learner_state(trainer).items()}
    _assert_same(deepspeed, _single_process(_cfg(tmp_path, "train.meta_steps=3")))


def _driver_must_not_prepare(*args, **kwargs):
    raise AssertionError("the driver prepared the data (it must happen in a Ray task)")


def test_stop_then_resume_equals_uninterrupted(zero2, tmp_path, monkeypatch):
    """The 3-step ZeRO-2 run, continued to 5 steps under the same run name, equals 5 steps in one go."""
    from metarec_dist.data import pipeline

    # Also: the driver never holds the log; the (uncached) data is prepared by a Ray task, in its own process.
    monkeypatch.setattr(pipeline, "prepare_data", _driver_must_not_prepare)
    second = train_on_ray(_cfg(zero2["storage"], *_ray_args(2, "zero2", "train.meta_steps=5")))  # resumes
    assert second["step"] == 5 and second["resumed_from"] == 3
    monkeypatch.undo()
    _assert_same(
        _exported(second["checkpoint"], tmp_path),
        _single_process(_cfg(tmp_path, "train.meta_steps=5", "tasks.shards=2")),
    )


def _kill_one_worker_after(run_dir: Path, checkpoint_name: str, timeout: float = 300) -> dict:
    """Kill one Ray Train worker process (SIGKILL) once the controller has registered ``checkpoint_name``
    (it is in Ray's checkpoint-manager snapshot), so the restarted group has a checkpoint to resume from."""
    import psutil

    state: dict = {}
    snapshot = run_dir / "checkpoint_manager_snapshot.json"

    def registered() -> bool:
        try:
            return checkpoint_name in snapshot.read_text()
        except OSError:
            return False

    def watch() -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and not registered():
            time.sleep(0.1)
        for p in psutil.process_iter(["cmdline"]):
            if any("RayTrainWorker" in part for part in (p.info["cmdline"] or [])):
                os.kill(p.pid, signal.SIGKILL)
                state["killed"] = p.pid
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    state["thread"] = thread
    return state


def test_killed_worker_restarts_from_last_checkpoint(ray_cluster, tmp_path):
    args = [
        "runtime.backend=ray",
        "runtime.num_workers=2",
        "runtime.zero_stage=2",
        "runtime.run_name=failover",
        "train.meta_steps=30",
        "checkpoint.every=5",
        "runtime.max_failures=2",
    ]
    killer = _kill_one_worker_after(tmp_path / "failover", "checkpoint_step_000005")
    out = train_on_ray(_cfg(tmp_path, *args))
    killer["thread"].join(timeout=5)
    assert "killed" in killer, "no Ray Train worker process was found to kill"
    assert out["step"] == 30
    assert out["resumed_from"] is not None and out["resumed_from"] >= 5 and out["resumed_from"] % 5 == 0


@pytest.mark.parametrize("features", [False, True])
def test_export_scores_equal_engine_scores(tmp_path, features):
    """ZeRO-3 engine (one process) vs the exported plain model: same item scores (with side information:
    the score table built from the content, read in chunks, and the user token)."""
    from metarec_dist.tasks.sampler import prefix_batch

    make = _feature_cfg if features else _cfg
    cfg = make(tmp_path, "runtime.deepspeed=true", "runtime.zero_stage=3", "train.meta_steps=2")
    data = prepare_data(cfg.data).user_splits()
    run = tmp_path / "run"
    trainer = MetaTrainer(cfg, LocalContext(run), data)
    out = trainer.fit()
    feats = data.user_features("valid")
    batch = prefix_batch(
        data.valid[:8], 3, cfg.tasks.support_max, trainer.model.bos_id, None if feats is None else feats[:8]
    )
    trainer.engine.eval()
    with torch.no_grad():
        engine_scores = trainer.engine.score(batch, None)
        # The chunked scoring goes through the same ZeRO-3 forward, reading the item table 7 items at a time.
        chunks: list[torch.Tensor] = []
        v = data.num_items
        trainer.engine.score_chunks(
            batch,
            None,
            lambda score_range: chunks.extend(score_range(lo, min(lo + 7, v)) for lo in range(0, v, 7)),
        )
    torch.testing.assert_close(torch.cat(chunks, dim=1), engine_scores)
    model = ckpt.load_exported(ckpt.export(Path(out["checkpoint"]), tmp_path / "export")).model
    from metarec_dist.meta import MetaLearner, build_algorithm

    plain = MetaLearner(model, build_algorithm(cfg.meta, model))
    with torch.no_grad():
        plain_scores = plain.score(batch, None)
    torch.testing.assert_close(plain_scores, engine_scores, atol=1e-5, rtol=1e-5)
    # a damaged shard is found and named
    shard = next((Path(out["checkpoint"]) / "engine" / "state").glob("*optim_states.pt"))
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(ValueError, match=shard.name):
        ckpt.verify(Path(out["checkpoint"]))
    shard.unlink()
    with pytest.raises(ValueError, match=f"{shard.name} is missing"):
        ckpt.load_checkpoint(trainer.engine, Path(out["checkpoint"]), 0)


def test_two_stages_on_ray_start_the_second_from_the_first(ray_cluster, tmp_path):
    """train.pretrain on Ray: the driver runs the first stage's Ray job, then the run's, whose workers load
    the first stage's weights from <run>/pretrain: the run equals one process started from that folder."""
    from metarec_dist.train.launch import train
    from metarec_dist.train.pretrain import stage_dir

    stage1 = tmp_path / "stage1.yaml"
    stage1.write_text(config_to_yaml(_cfg(tmp_path, "meta.algorithm=sasrec", "train.meta_steps=2")))
    options = ["train.meta_steps=2", "model.adapters=[lowrank,itemlr]"]
    out = train(_cfg(tmp_path, *_ray_args(2, "two", *options, f"train.pretrain={stage1}")))
    first = stage_dir(_cfg(tmp_path, "runtime.run_name=two"))
    assert out["pretrain_path"] == str(first) and ckpt.find_checkpoint(first).name == "checkpoint_step_000002"
    by_hand = _single_process(_cfg(tmp_path, *options, "tasks.shards=2", f"train.init_from={first}"))
    _assert_same(_exported(out["checkpoint"], tmp_path), by_hand)
    fresh = _single_process(_cfg(tmp_path, *options, "tasks.shards=2"))
    assert not torch.allclose(fresh["item_emb.weight"], by_hand["item_emb.weight"])  # the test can fail


def test_a_newer_log_on_ray_starts_from_the_old_model_item_by_raw_id(ray_cluster, tmp_path):
    """Re-training on a grown log (train.init_from across catalogues) on 2 Ray workers: each worker maps the
    old model's items by the raw ids the driver's catalogue carries, as one process does. The old log lacks
    items 1-6 (every id the new log numbers moves) and item features come from both logs' side files."""
    from feature_data import write_feature_data

    from metarec_dist.train.launch import train

    new = write_feature_data(tmp_path / "new-log")
    old = tmp_path / "old-log" / new.name
    old.parent.mkdir()
    header, *rows = new.read_text().splitlines(keepends=True)
    old.write_text(header + "".join(r for r in rows if int(r.split("\t")[1]) > 6))
    for side in (".user", ".item"):
        old.with_suffix(side).write_text(new.with_suffix(side).read_text())
    base = [o for o in BASE if not o.startswith("data.")] + ["train.meta_steps=2"]

    def cfg(log: Path, *extra: str):
        return feature_config(tmp_path, [*base, f"runtime.storage_path={tmp_path}", *extra], path=str(log))

    train(cfg(old, "runtime.run_name=old"))  # one local process: the deployed model
    warm = [f"train.init_from={tmp_path / 'old'}"]
    out = train(cfg(new, *_ray_args(2, "warm", *warm)))
    by_hand = _single_process(cfg(new, "tasks.shards=2", *warm))
    _assert_same(_exported(out["checkpoint"], tmp_path), by_hand)
    # The test can fail: the two logs number the kept items differently, and the warm start is not fresh.
    old_ids, new_ids = (
        json.loads((ckpt.find_checkpoint(tmp_path / run) / ckpt.CLIENT_STATE).read_text())["item_raw_ids"]
        for run in ("old", "warm")
    )
    assert set(old_ids) < set(new_ids) and old_ids != new_ids[: len(old_ids)]
    fresh = _single_process(cfg(new, "tasks.shards=2"))
    assert not torch.allclose(fresh["item_emb.weight"], by_hand["item_emb.weight"])
