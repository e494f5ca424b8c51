"""``metarec bench meta-step``: the batched meta-step against a per-task loop and a plain training step.

All three do a full training step (forward, backward, optimizer update) on the same sequences:
- ``meta_step``: the batched algorithm (backbone once, inner loop over all tasks at once);
- ``loop_step``: the same meta-step written task by task, as learn2learn/higher users write it;
- ``plain_step``: one plain next-item step over the same sequences (no inner loop): the floor.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from metarec_dist.config import Config, MetaConfig, resolve_loss
from metarec_dist.data.synthetic import make_synthetic_sequences
from metarec_dist.meta import build_algorithm
from metarec_dist.meta.algorithms import PlainNextItem
from metarec_dist.meta.reference import loop_meta_loss
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.runtime.allocator import apply_process_settings
from metarec_dist.runtime.engine import make_optimizer
from metarec_dist.tasks.sampler import TaskSampler
from metarec_dist.tasks.types import MetaBatch
from metarec_dist.train.trainer import check_batch_fits, check_model_fits

log = logging.getLogger("metarec")


def _median_times(
    fns: dict[str, Callable[[], None]], repeats: dict[str, int], warmup: int = 2
) -> dict[str, float]:
    """Median seconds per call. Calls are interleaved round-robin so that a noisy neighbour on a 2-core
    machine slows every variant alike instead of biasing whichever happened to run at that moment."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(max(repeats.values())):
        for name, fn in fns.items():
            if r < repeats[name]:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def plain_loss(model: SeqRecommender, batch: MetaBatch) -> torch.Tensor:
    """Next-item loss at every position of the same sequences, no adaptation (SASRec-style step)."""
    return PlainNextItem(MetaConfig(), model).meta_loss(model, batch).loss


def run_meta_step_bench(cfg: Config, repeats: int = 20, loop_repeats: int = 3) -> dict[str, Any]:
    apply_process_settings(cfg.runtime)
    num_items = cfg.data.synthetic_items
    if cfg.data.format != "synthetic":  # said, not silently ignored: the figures are of synthetic data
        log.warning(
            "bench meta-step times synthetic sequences of data.synthetic_items=%d items; data.format=%s "
            "is not read (set data.synthetic_items to its catalogue size)",
            num_items,
            cfg.data.format,
        )
    cfg = resolve_loss(cfg, num_items)
    check_model_fits(cfg, num_items)  # as training checks them: one line naming the sizes, before any of it
    check_batch_fits(cfg, 1)
    seqs = make_synthetic_sequences(
        num_users=cfg.data.synthetic_users, num_items=num_items, seed=cfg.train.seed
    )
    torch.manual_seed(cfg.train.seed)
    model = SeqRecommender(cfg.model, num_items)
    algo = build_algorithm(cfg.meta, model)
    opt = make_optimizer([*model.parameters(), *algo.parameters()], cfg.optim)
    negatives = cfg.model.num_negatives if cfg.model.loss == "sampled" else 0
    batch = TaskSampler(seqs, cfg.tasks, num_items, cfg.train.seed, negatives).sample(
        cfg.meta.meta_batch_size
    )

    def step(loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn().backward()
            opt.step()

        return run

    # meta and plain are interleaved (a noisy neighbour slows both alike); the slow loop runs on its own,
    # after them, so its large allocations do not disturb the caches of the steps measured right after it.
    fast = _median_times(
        {
            # track_adaptation off, as on the trainer's non-logging steps
            "meta": step(lambda: algo.meta_loss(model, batch, track_adaptation=False).loss),
            "plain": step(lambda: plain_loss(model, batch)),
        },
        {"meta": repeats, "plain": repeats},
    )
    loop = step(
        lambda: loop_meta_loss(
            model,
            batch,
            cfg.meta.algorithm,
            cfg.meta.adaptation_steps,
            algo.inner_lrs(),
            cfg.meta.init_query_weight,
            context=getattr(algo, "context", None),  # the context-init algorithms' encoder
        )
    )
    slow = _median_times({"loop": loop}, {"loop": loop_repeats}, warmup=1)
    meta_s, plain_s, loop_s = fast["meta"], fast["plain"], slow["loop"]
    return {
        "bench": "meta-step",
        "algorithm": cfg.meta.algorithm,
        "tasks": cfg.meta.meta_batch_size,
        "data": "synthetic",
        "num_items": num_items,
        "adaptation_steps": cfg.meta.adaptation_steps,
        "threads": torch.get_num_threads(),
        "tasks_per_s": cfg.meta.meta_batch_size / meta_s,
        "meta_step_s": meta_s,
        "loop_step_s": loop_s,
        "plain_step_s": plain_s,
        "speedup_vs_loop": loop_s / meta_s,
        "overhead_vs_plain": meta_s / plain_s,
    }
