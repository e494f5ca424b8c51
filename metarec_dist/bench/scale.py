"""``metarec bench scale``: what grows with the log, the catalogue and the cluster (issue 14).

One run reports, each part measured in a fresh process (peak memory is per process):

- ``data``: a generated log of N and 10 N interactions (``bench/data_bench.py``'s MovieLens-like log, as
  Parquet) trained for 2 meta-steps on Ray (tiny model): ``rank_data_mb_*`` is the peak resident memory of
  the rank-0 Ray worker (the trainer's ``peak_memory_gb``) minus the same run's on a 20k-interaction log,
  i.e. what the training data adds to a worker whatever path brings it there; ``rank_data_ratio_2_vs_1``
  divides that at 10 N with 2 workers by 1 worker. ``driver_peak_mb_*`` is the driver process's peak
  resident memory over the whole command (data preparation from a cold cache included).
- ``eval``: one adaptation-grid setting (FOMAML, 3 steps, shots 1/3/5/10, 20k items) on generated users,
  scored on 1 and on 2 Ray actors (``eval.workers``, one torch thread each), timed after a warm-up call;
  in this process (torch's default threads, ``_inprocess_default``, and one thread, ``_inprocess_1t``) on a
  quarter of the users for reference.
- ``zero``: a 1M-item catalogue trained 3 meta-steps on 2 gloo ranks (DeepSpeed, CPU) at ZeRO-0 and ZeRO-3:
  the parameter memory each rank holds (partitions plus whatever is resident in full) and the growth of its
  peak resident memory during the validation that follows (chunked full ranking); and the largest gap
  between the two stages' training losses (``zero3_max_loss_diff_vs_zero0``: the same training, or not).
- ``sampled``: meta-steps per second with sampled softmax at 20k and 1M items (tiny model, one process).

``--interactions`` sets N (default 2M: 2M and 20M); a smaller N is the quick run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metarec_dist.errors import UserError

TINY_MODEL = [
    "model.hidden_size=16",
    "model.num_heads=2",
    "model.adapter_rank=2",
    "model.max_seq_len=16",
    "tasks.support_max=5",
    "tasks.query_size=3",
    "logging.wandb=off",
    "checkpoint.resume=false",
]
BASE_INTERACTIONS = 20_000  # the "no data" reference run of the data part
EVAL_USER_BYTES = 320  # per user of the eval part's generated users (random_users: ~26 int64 items each)
# A child part that stops on a user mistake prints {USER_ERROR_KEY: message} last and exits with this.
USER_ERROR_KEY = "user_error"
USER_ERROR_STATUS = 3
TARGETS = {
    "rank_data_ratio_2_vs_1": ("<=", 0.6),
    "driver_peak_ratio_10x_vs_1x": ("<", 1.5),
    "zero3_vs_zero0_param_ratio": ("<=", 0.6),
    "eval_speedup_2w_vs_1w": (">=", 1.6),
}


# ----------------------------------------------------------------------------------------- measurements


def proc_mb(key: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` of this process, MiB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
    return int(line.split()[1]) / 1024


def reset_peak() -> float:
    """Reset this process's peak resident memory to its current size (Linux); returns it, MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return proc_mb("VmHWM")


def rank_param_mb(module: Any) -> float:
    """Parameter memory this rank holds: under ZeRO-3 its partition of each parameter plus the parameters
    kept whole (small ones below the persistence threshold, or any gathered at the moment); else all."""
    total = 0
    for p in module.parameters():
        part = getattr(p, "ds_tensor", None)
        total += p.data.numel() * p.element_size()
        if part is not None:
            total += part.numel() * part.element_size()
    return total / 2**20


def random_users(n: int, num_items: int, seed: int, lo: int = 12, hi: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, num_items + 1, int(rng.integers(lo, hi + 1))) for _ in range(n)]


# ----------------------------------------------------------------------------------------- parts


def data_part(log: str, cache: str, workers: int, storage: str) -> dict[str, float]:
    """Train 2 meta-steps on Ray from the Parquet ``log``: the rank-0 worker's and the driver's peaks."""
    from metarec_dist.config import load_config
    from metarec_dist.runtime.ray_launcher import init_ray, shutdown_ray, train_on_ray

    cfg = load_config(
        None,
        [
            *TINY_MODEL,
            "data.format=parquet",
            f"data.path={log}",
            f"data.cache_dir={cache}",
            f"meta.meta_batch_size={4 * workers}",
            "train.meta_steps=2",
            "train.log_every=1",
            "train.eval_every=0",
            "train.timing_warmup=0",
            "train.eval_users=16",
            "eval.shots=[1]",
            "checkpoint.every=0",
            "runtime.backend=ray",
            f"runtime.num_workers={workers}",
            f"runtime.storage_path={storage}",
            f"runtime.run_name=scale-{workers}w-{Path(log).stem}",
        ],
    )
    init_ray(num_cpus=workers + 2)  # room for Ray Data's tasks beside the training workers
    try:
        out = train_on_ray(cfg)
    finally:
        shutdown_ray()
    return {"worker_peak_mb": out["peak_memory_gb"] * 1e6 / 1024, "driver_peak_mb": proc_mb("VmHWM")}


def eval_part(users: int, num_items: int = 20_000, repeats: int = 2) -> dict[str, float]:
    """Users per second of one grid setting, in this process and on 1 and 2 Ray actors."""
    import torch

    from metarec_dist.config import load_config
    from metarec_dist.data.split import UserSplits
    from metarec_dist.eval.distributed import InProcess
    from metarec_dist.eval.protocol import AdaptingScorer, ColdStartProtocol
    from metarec_dist.models.recommender import SeqRecommender
    from metarec_dist.runtime.eval_pool import actor_pool, close_actor_pool
    from metarec_dist.runtime.ray_launcher import init_ray

    cfg = load_config(None, ["eval.batch_users=32", "model.max_seq_len=32"])
    seqs = random_users(users, num_items, seed=1)
    protocol = ColdStartProtocol(UserSplits([], seqs, [], num_items), [1, 3, 5, 10], 10, cfg.eval)
    torch.manual_seed(0)
    scorer = AdaptingScorer(SeqRecommender(cfg.model, num_items, seed=0).eval(), "fomaml", 0.5)

    def users_per_s(runner: Any, part: list[np.ndarray] = seqs) -> float:
        start = time.perf_counter()
        protocol.per_user(scorer, part, steps=3, runner=runner)
        return len(part) / (time.perf_counter() - start)

    few = seqs[: max(1, users // 4)]  # in this process: a quarter of the users, after a warm-up

    def in_process() -> float:
        users_per_s(InProcess(), few[:32])
        return users_per_s(InProcess(), few)

    out: dict[str, Any] = inprocess_rates(in_process)
    init_ray(num_cpus=os.cpu_count() or 1)
    for workers in (1, 2, 1, 2):  # A-B-A-B: a drift in the shared machine's speed lands on both sides
        pool = actor_pool(workers)
        users_per_s(pool)  # warm-up: actors import torch, first calls allocate
        runs = [users_per_s(pool) for _ in range(repeats)]
        out.setdefault(f"runs_{workers}w", []).extend(runs)
    close_actor_pool(shutdown=True)
    for workers in (1, 2):
        out[f"eval_users_per_s_{workers}w"] = float(np.median(out[f"runs_{workers}w"]))
    return out


def inprocess_rates(measure: Callable[[], float]) -> dict[str, Any]:
    """``measure`` (users per second) at torch's default threads and at one thread, keyed by that role and
    not by the count: with one thread by default (OMP_NUM_THREADS=1) both were ``_1t`` and the first
    figure was lost. ``eval_inprocess_default_threads`` says how many the default was."""
    import torch

    default = torch.get_num_threads()
    out: dict[str, Any] = {"eval_inprocess_default_threads": default}
    for role, threads in (("default", default), ("1t", 1)):
        torch.set_num_threads(threads)
        out[f"eval_users_per_s_inprocess_{role}"] = measure()
    return out


def zero_rank(
    rank: int,
    world: int,
    port: int,
    stage: int,
    num_items: int,
    out_dir: str,
    steps: int = 3,
    shots: tuple[int, ...] = (1, 3),
) -> None:
    """One of ``world`` gloo ranks: train ``steps`` meta-steps at ZeRO ``stage`` on a ``num_items`` catalogue,
    then validate; rank figures to ``out_dir/zero{stage}_rank{rank}.json``."""
    import torch

    from metarec_dist.data.split import UserSplits
    from metarec_dist.runtime.context import WorkerContext
    from metarec_dist.train.trainer import MetaTrainer

    _join_gloo(rank, world, port)
    data = UserSplits(
        random_users(2000, num_items, seed=2), random_users(64, num_items, seed=3, lo=8), [], num_items
    )

    class Rank(WorkerContext):
        pass

    ctx = Rank()
    ctx.rank, ctx.world_size = rank, world
    try:
        trainer = MetaTrainer(_zero_config(stage, world, steps), ctx, data)
        figures = _rank_figures(trainer, steps, shots)
        Path(out_dir, f"zero{stage}_rank{rank}.json").write_text(json.dumps(figures))
    finally:
        torch.distributed.destroy_process_group()
    exit_rank_process()


def _join_gloo(rank: int, world: int, port: int) -> None:
    """Join a ``world``-rank gloo group whose rendezvous is on 127.0.0.1:``port``."""
    import torch

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)


def _zero_config(stage: int, world: int, steps: int) -> Any:
    """The tiny model under DeepSpeed ZeRO ``stage`` on ``world`` ranks, trained ``steps`` meta-steps."""
    from metarec_dist.config import load_config

    return load_config(
        None,
        [
            *TINY_MODEL,
            "meta.meta_batch_size=8",
            f"train.meta_steps={steps}",
            "train.eval_users=64",
            "eval.batch_users=64",
            "runtime.deepspeed=true",
            f"runtime.zero_stage={stage}",
            f"runtime.num_workers={world}",
        ],
    )


def _rank_figures(trainer: Any, steps: int, shots: tuple[int, ...]) -> dict[str, Any]:
    """Train ``steps`` meta-steps, validate at ``shots``, and say this rank's memory and losses."""
    params = list(trainer.engine.module.parameters())
    param_mb = rank_param_mb(trainer.engine.module)
    losses = [trainer.train_step()["loss"] for _ in range(steps)]
    base = reset_peak()
    val = trainer.validate(list(shots))
    eval_delta = proc_mb("VmHWM") - base
    return {
        "param_mb": param_mb,
        "full_param_mb": sum(getattr(p, "ds_numel", p.numel()) for p in params) * 4 / 2**20,
        "loss": trainer.cfg.model.loss,
        "losses": losses,
        "val_ndcg": val[f"val/ndcg@10@k{shots[-1]}"],
        "eval_peak_delta_mb": eval_delta,
        "peak_mb": proc_mb("VmHWM"),
    }


def exit_rank_process() -> None:
    """End a spawned gloo rank that has written its results, skipping interpreter finalisation.

    Objects still holding gloo work (the DeepSpeed engine's ZeRO-3 hooks and handles) are otherwise
    destroyed while the interpreter is torn down; their C++ destructors then need the GIL and the process
    aborts ("terminate called without an active exception", SIGABRT), now and then, after all the work
    succeeded: torch.multiprocessing reports the rank as failed. Only reached on success (an exception
    propagates to the spawner as itself)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zero_run(
    stage: int, num_items: int, out_dir: str, world: int = 2, steps: int = 3, shots: tuple[int, ...] = (1, 3)
) -> list[dict[str, Any]]:
    """Every rank's figures of a ``world``-rank run at ZeRO ``stage``."""
    import torch.multiprocessing as mp

    port = free_port()
    mp.start_processes(
        zero_rank,
        args=(world, port, stage, num_items, out_dir, steps, shots),
        nprocs=world,
        start_method="spawn",
    )
    return [json.loads(Path(out_dir, f"zero{stage}_rank{r}.json").read_text()) for r in range(world)]


def zero_part(num_items: int = 1_000_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="metarec-zero-") as tmp:
        runs = {stage: zero_run(stage, num_items, tmp) for stage in (0, 3)}
    return zero_summary(runs, num_items)


def zero_summary(runs: dict[int, list[dict[str, Any]]], num_items: int) -> dict[str, Any]:
    """Each stage's largest figure over its ranks, and how far ZeRO-3's training losses are from ZeRO-0's
    (rank by rank, step by step): the memory saved is only worth reporting for the same training."""
    diffs = [
        abs(a - b)
        for r0, r3 in zip(runs[0], runs[3], strict=True)
        for a, b in zip(r0["losses"], r3["losses"], strict=True)
    ]
    return {
        "zero0_rank_param_mb": max(r["param_mb"] for r in runs[0]),
        "zero3_rank_param_mb": max(r["param_mb"] for r in runs[3]),
        "zero0_eval_peak_delta_mb": max(r["eval_peak_delta_mb"] for r in runs[0]),
        "zero3_eval_peak_delta_mb": max(r["eval_peak_delta_mb"] for r in runs[3]),
        "zero0_rank_peak_mb": max(r["peak_mb"] for r in runs[0]),
        "zero3_rank_peak_mb": max(r["peak_mb"] for r in runs[3]),
        "zero_items": num_items,
        "zero_loss": runs[3][0]["loss"],
        "zero3_max_loss_diff_vs_zero0": max(diffs),
    }


# configs/tiny.yaml as the defaults plus these: the same model wherever the command runs (reading
# configs/tiny.yaml from the working directory gave the defaults' 64-token model outside the repository).
TINY_CONFIG = ["model.max_seq_len=32", "optim.warmup_steps=10"]


def sampled_config(steps: int) -> Any:
    """The sampled part's config: configs/tiny.yaml's model and meta-batch with sampled softmax."""
    from metarec_dist.config import load_config

    return load_config(
        None,
        [
            *TINY_CONFIG,
            "model.loss=sampled",
            f"train.meta_steps={steps}",
            f"train.timing_warmup={steps // 4}",
            f"train.log_every={steps}",
            "train.eval_every=0",
            "logging.wandb=off",
        ],
    )


def sampled_part(num_items: int, steps: int = 16) -> dict[str, float]:
    """Meta-batches of 64 tasks (FOMAML, 3 inner steps, d = 64) with 256 shared sampled negatives."""
    from metarec_dist.data.split import UserSplits
    from metarec_dist.runtime.context import LocalContext
    from metarec_dist.train.trainer import MetaTrainer

    cfg = sampled_config(steps)
    data = UserSplits(random_users(4000, num_items, seed=4), [], [], num_items)
    return {"tasks_per_s": MetaTrainer(cfg, LocalContext(None), data).fit()["tasks_per_s"]}


# ----------------------------------------------------------------------------------------- driver


def _child(part: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``part`` in a fresh interpreter (its own peak memory); its JSON result."""
    cmd = [sys.executable, "-m", "metarec_dist.bench.scale", "--child", part, "--kwargs", json.dumps(kwargs)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    if out.returncode == USER_ERROR_STATUS and (message := _user_error(lines)) is not None:
        raise UserError(f"bench scale part {part}: {message}")
    if out.returncode != 0:
        raise RuntimeError(f"bench scale part {part} {kwargs} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def _user_error(lines: list[str]) -> str | None:
    """The message of a child's ``{USER_ERROR_KEY: ...}`` last line; None if its last line is not one."""
    try:
        last = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return last.get(USER_ERROR_KEY) if isinstance(last, dict) else None


PARTS = {"data": data_part, "eval": eval_part, "zero": zero_part, "sampled": sampled_part}


def data_logs(interactions: int, tmp: Path) -> dict[str, tuple[int, Path]]:
    """Each log of the data part: its role -> (interactions, Parquet file). Named by role, not size: N can
    be the base size (20000) or 10 N can (2000), and the run folder takes the file's name
    (``scale-2w-log-base``), so a size in the name would make two runs one folder."""
    sizes = {"base": BASE_INTERACTIONS, "1x": interactions, "10x": 10 * interactions}
    return {role: (n, tmp / f"log-{role}.parquet") for role, n in sizes.items()}


def run_data(interactions: int, tmp: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from metarec_dist.bench.data_bench import make_log

    logs = {}
    for name, (n, path) in data_logs(interactions, tmp).items():
        logs[name] = str(path)
        pq.write_table(make_log(n), logs[name])
    run = {}
    for name, workers in (("base", 2), ("1x", 2), ("10x", 2), ("base", 1), ("10x", 1)):
        cache = str(tmp / f"cache-{name}")  # shared by the 2- and 1-worker runs: the first one is cold
        run[name, workers] = _child("data", log=logs[name], cache=cache, workers=workers, storage=str(tmp))
    worker = {k: v["worker_peak_mb"] for k, v in run.items()}
    out = {
        "interactions_1x": interactions,
        "interactions_10x": 10 * interactions,
        "rank_data_mb_1x": worker["1x", 2] - worker["base", 2],
        "rank_data_mb_10x": worker["10x", 2] - worker["base", 2],
        "rank_data_mb_10x_1w": worker["10x", 1] - worker["base", 1],
        "driver_peak_mb_base": run["base", 2]["driver_peak_mb"],
        "driver_peak_mb_1x": run["1x", 2]["driver_peak_mb"],
        "driver_peak_mb_10x": run["10x", 2]["driver_peak_mb"],
        "driver_peak_mb_10x_cached": run["10x", 1]["driver_peak_mb"],
        "worker_peak_mb": {f"{k[0]}_{k[1]}w": round(v, 1) for k, v in worker.items()},
    }
    out["rank_data_ratio_2_vs_1"] = _data_ratio(out["rank_data_mb_10x"], out["rank_data_mb_10x_1w"])
    out["driver_peak_ratio_10x_vs_1x"] = out["driver_peak_mb_10x"] / out["driver_peak_mb_1x"]
    return out


def _data_ratio(two_workers_mb: float, one_worker_mb: float) -> float | None:
    """What the data adds to a rank at 2 workers over 1; None when either adds nothing measurable (a log
    no bigger than the 20k-interaction reference run: the differences are noise, e.g. -1.8 / -0.3 MiB,
    which read as a ratio of -1.8e9 and a target met)."""
    if two_workers_mb <= 0 or one_worker_mb <= 0:
        return None
    return two_workers_mb / one_worker_mb


def check_sizes(interactions: int, eval_users: int, parts: tuple[str, ...]) -> None:
    """The data the chosen ``parts`` generate fits in memory, or a ``UserError`` naming the option, before
    any part runs: the data part's largest log is 10 N, made in this process; the eval part's users are
    made in its child (--eval-users 10**9 filled the machine's memory there)."""
    from metarec_dist.bench.data_bench import check_log_fits
    from metarec_dist.errors import check_fits

    if "data" in parts:
        check_log_fits(10 * interactions, f"--interactions {interactions:,} (the data part's 10 N)")
    if "eval" in parts:
        what = f"--eval-users {eval_users:,}"
        check_fits(eval_users, EVAL_USER_BYTES, what, "the generated users alone need", "user")


def run_scale_bench(
    interactions: int = 2_000_000, eval_users: int = 1024, parts: tuple[str, ...] = tuple(PARTS)
) -> dict[str, Any]:
    unknown = set(parts) - set(PARTS)
    if unknown:  # "" too: a comma too many ("zero,"), which read as "unknown ['']"
        what = "an empty name" if "" in unknown else f"unknown {sorted(unknown)}"
        raise UserError(f"--parts {','.join(parts)}: {what}; a comma-separated subset of {','.join(PARTS)}")
    check_sizes(interactions, eval_users, parts)
    out: dict[str, Any] = {"bench": "scale", "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    start = time.perf_counter()
    if "data" in parts:
        with tempfile.TemporaryDirectory(prefix="metarec-scale-") as tmp:
            out.update(run_data(interactions, Path(tmp)))
    if "eval" in parts:
        ev = _child("eval", users=eval_users)
        out.update(ev)
        out["eval_users"] = eval_users
        out["eval_speedup_2w_vs_1w"] = ev["eval_users_per_s_2w"] / ev["eval_users_per_s_1w"]
    if "zero" in parts:
        out.update(_child("zero"))
        out["zero3_vs_zero0_param_ratio"] = out["zero3_rank_param_mb"] / out["zero0_rank_param_mb"]
    if "sampled" in parts:
        out["sampled_tasks_per_s_20k_items"] = _child("sampled", num_items=20_000)["tasks_per_s"]
        out["sampled_tasks_per_s_1m_items"] = _child("sampled", num_items=1_000_000)["tasks_per_s"]
    out["targets_met"] = {k: _met(out[k], *rule) for k, rule in TARGETS.items() if out.get(k) is not None}
    out["load_after"] = os.getloadavg()
    out["wall_s"] = round(time.perf_counter() - start, 1)
    return out


def _met(value: float, op: str, bound: float) -> bool:
    return {"<=": value <= bound, "<": value < bound, ">=": value >= bound}[op]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", choices=list(PARTS))
    p.add_argument("--kwargs", default="{}")
    args = p.parse_args()
    try:
        result = PARTS[args.child](**json.loads(args.kwargs))
    except UserError as exc:  # the parent says it as one line (`_child`); anything else keeps its traceback
        print(json.dumps({USER_ERROR_KEY: str(exc)}))
        sys.exit(USER_ERROR_STATUS)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
