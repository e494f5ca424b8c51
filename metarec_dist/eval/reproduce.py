"""The multi-seed cold-start comparison behind ``docs/results.md``: train every method with every seed,
evaluate each with its own protocol (adaptation tuned on validation users), average per user over seeds,
and write the JSON summary, the NDCG@10-vs-K plot and the tables.

    python -m metarec_dist.eval.reproduce --method fomaml=configs/ml100k.yaml --method none=... --seeds 0,1,2

Runs go to ``<out>/runs/<method>-s<seed>`` (plain training checkpoints: ``metarec evaluate`` reads them too),
per-user results to ``<out>/per_user/``, and the JSON, plot and tables to ``<out>/results.json``,
``<out>/ndcg_vs_k.png`` and ``<out>/results.md`` unless ``--json``, ``--plot`` or ``--markdown`` name other
files: a published page in ``docs/`` is rewritten only when named (the launch scripts name theirs).
Training runs in ``--jobs`` processes of one torch thread each: these models are too small for intra-op
threads to pay off, so two processes use two cores best.

The evaluation (the adaptation grid on validation users, then the test users) is the expensive part; with
``--set eval.workers=N`` every run scores its users on N Ray actors, batch by batch, with the same numbers
(``eval/distributed.py``). Each ``--jobs`` process then starts its own local Ray cluster: use ``--jobs 1``
with ``eval.workers`` = the cores, or start one cluster (``ray start --head``) and set ``RAY_ADDRESS``.
A run with ``runtime.use_gpu=true`` trains on ``cuda:0`` (as ``metarec train``) and is evaluated there
(``eval/device.py``; the actors of ``eval.workers`` have no GPU, so that combination is refused);
``--device`` evaluates every run elsewhere (``cpu``, ``cuda:N``, ``auto``).

``--protocol new_items`` (or ``mixed``) trains every method with ``data.protocol=new_items`` and compares
them with the content-kNN and random baselines (``eval/new_items.py``). ``--reuse-runs`` evaluates the
finished runs of an earlier invocation with the same ``--out`` and exactly the same settings instead of
training them again (e.g. ``mixed`` after ``new_items``), and trains the others; ``--reuse`` instead takes
the per-user results an identical earlier run left in ``--out`` (nothing re-evaluated), and ``--collect``
publishes those without training anything. ``--pair A=B`` gives method A a paired interval against B
instead of ``--baseline`` (``fomaml+features=fomaml``); ``--section NAME`` writes the tables into their own
marked section of the Markdown file, so several comparisons share one page.

A two-stage config (``train.pretrain``) trains its first stage into ``<run>/pretrain`` first; a method whose
config is exactly another method's first stage for the same seed (the recipe's baseline) is evaluated from
that first stage instead of being trained again (``share_first_stages``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pickle
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarec_dist.eval.cold_start import PerUser
from metarec_dist.eval.stats import MethodResult, mean_over_seeds

if TYPE_CHECKING:
    import torch

    from metarec_dist.config import Config
    from metarec_dist.data.split import UserSplits
    from metarec_dist.eval.protocol import ColdStartProtocol

ITEM_PROTOCOLS = ("new-items", "mixed")  # as eval/item_protocol.py (not imported here: it pulls in torch)
PROTOCOLS = ("cold_start", *ITEM_PROTOCOLS)

log = logging.getLogger("metarec")


@dataclass(frozen=True)
class RunSpec:
    method: str  # the label in the tables, e.g. "fomaml"
    config: str  # YAML file
    seed: int
    finetune: bool  # none/sasrec: also report the test-time fine-tuned variant
    overrides: tuple[str, ...] = ()
    protocol: str = (
        "cold_start"  # cold_start | new-items | mixed (the last two train on data.protocol=new_items)
    )
    reuse_runs: bool = False  # evaluate a finished run of the same settings instead of training it again
    # The first stage (train.pretrain) of another method's run of this seed that is exactly this run: it is
    # evaluated instead of training the same model twice (share_first_stages)
    shared_run: str | None = None
    fuse: bool = False  # also report the variant fused with the co-occurrence counts (METHOD+cooc)
    # --device: where the run is evaluated (eval/device.py); None: where it trained (runtime.use_gpu)
    device: str | None = None

    @property
    def run_name(self) -> str:
        return f"{self.method}-s{self.seed}"

    @property
    def all_overrides(self) -> tuple[str, ...]:
        item = ("data.protocol=new_items",) if self.protocol in ITEM_PROTOCOLS else ()
        return (*self.overrides, *item)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")


def build_protocol(
    name: str, splits: UserSplits, shots: list[int], cfg: Config, device: torch.device | str = "cpu"
) -> ColdStartProtocol:
    """The protocol ``name`` over ``splits`` with the config's support_max and ``eval:`` section, scoring
    the model on ``device``."""
    from metarec_dist.eval.item_protocol import item_protocol
    from metarec_dist.eval.protocol import ColdStartProtocol

    if name in ITEM_PROTOCOLS:
        protocol = item_protocol(name, splits, shots, cfg.tasks.support_max, cfg.eval)
    else:
        protocol = ColdStartProtocol(splits, shots, cfg.tasks.support_max, cfg.eval)
    return dataclasses.replace(protocol, device=device)


def training_device(cfg: Config) -> str | None:
    """Where a run of ``cfg`` trains: ``cuda:0`` with ``runtime.use_gpu=true``, as ``metarec train`` does
    (None: the CPU)."""
    return "cuda:0" if cfg.runtime.use_gpu else None


def evaluation_device(cfg: Config, asked: str | None) -> torch.device:
    """Where a run of ``cfg`` is evaluated: ``--device`` (``asked``), else where it trained
    (``training_device``)."""
    from metarec_dist.eval.device import resolve_device

    return resolve_device(asked or training_device(cfg) or "cpu")


def per_user_path(spec: RunSpec, out: Path) -> Path:
    suffix = "" if spec.protocol == "cold_start" else f"-{spec.protocol}"
    return out / "per_user" / f"{spec.run_name}{suffix}.pkl"


def reusable(spec: RunSpec, out: Path) -> dict[str, Any] | None:
    """The per-user results an earlier call left for this run, if it ran the same config with the same
    overrides (``--reuse``): a reproduction killed half-way, or extended by seeds or methods, then only
    trains what is missing."""
    path = per_user_path(spec, out)
    if not path.is_file():
        return None
    from metarec_dist.eval.protocol import FUSED

    runs = pickle.loads(path.read_bytes())
    same = all(
        info.get("config") == spec.config and info.get("overrides") == list(spec.overrides)
        for _, info in runs.values()
    )
    wanted = {spec.method} | ({spec.method + FUSED} if spec.fuse else set())
    return runs if same and wanted <= set(runs) else None


def train_and_evaluate(spec: RunSpec, out: Path, shots: list[int], reuse: bool = False) -> dict[str, Any]:
    """Train one run from scratch (or, with ``spec.reuse_runs``, take the finished run of the same settings),
    then evaluate it on the test users: ``{label: (per_user, info)}``. ``reuse``: return the per-user results
    of an identical earlier run instead, if there are any."""
    if reuse and (earlier := reusable(spec, out)) is not None:
        log.info("%s: reusing %s", spec.run_name, out / "per_user")
        return earlier
    from metarec_dist.eval.loading import load_model, load_prepared
    from metarec_dist.eval.protocol import method_name
    from metarec_dist.runtime.allocator import apply_process_settings

    cfg = spec_config(spec, out)
    apply_process_settings(cfg.runtime)  # as `metarec train` does (the worker already runs one thread)
    run_dir = out / "runs" / spec.run_name
    t0 = time.perf_counter()
    checkpoint = shared_checkpoint(spec, cfg) if spec.shared_run else None
    if checkpoint is None and spec.reuse_runs:
        checkpoint = reused_checkpoint(run_dir, cfg)
    train_s = None
    evaluation = evaluation_device(cfg, spec.device)
    if checkpoint is None:
        checkpoint = train_one(cfg, run_dir, keep_first_stage=spec.reuse_runs)
        train_s = round(time.perf_counter() - t0, 1)
    loaded = load_model(checkpoint)
    data = load_prepared(loaded.cfg).user_splits()
    protocol = build_protocol(spec.protocol, data, shots, cfg, evaluation)
    out_runs: dict[str, Any] = {}
    budget = training_budget(cfg, data.train, data.num_items, trained_steps(loaded))
    if cfg.train.pretrain:  # the first stage's budget too: the recipe's cost is both stages
        budget["pretrain"] = first_stage_budget(cfg, data)
    variants = [(False, False)] + [(True, False)] * spec.finetune + [(False, True)] * spec.fuse
    chosen = {}  # finetune -> the adaptation chosen on validation users, shared by the fused variant
    for finetune, fuse in variants:
        # The label need not be an algorithm.
        label = method_name(loaded.algorithm, finetune, spec.method, fuse=fuse)
        if finetune not in chosen:
            chosen[finetune] = protocol.choose_adaptation(loaded, finetune)
        res = protocol.evaluate(
            loaded, "test", finetune=finetune, name=label, fuse=fuse, adaptation=chosen[finetune]
        )
        res.info.update(
            {
                "seed": spec.seed,
                "config": spec.config,
                "overrides": list(spec.overrides),
                "train_s": train_s,
                "checkpoint": checkpoint,
                **({"shared_run": spec.shared_run} if spec.shared_run else {}),
                "val_ndcg@10": validation_score(protocol, loaded, res.info["adaptation"]),
                **budget,
                # where the numbers were computed, when not on the CPU (a CPU run's record is unchanged)
                **({"device": str(evaluation)} if evaluation.type != "cpu" else {}),
            }
        )
        out_runs[label] = (res.per_user, res.info)
        log.info("%s seed %d: %s", label, spec.seed, res.info["adaptation"])
    path = per_user_path(spec, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(out_runs))
    return out_runs


def spec_config(spec: RunSpec, out: Path) -> Config:
    """The config ``spec`` trains: its file with the seed, the run folder ``<out>/runs/<method>-s<seed>``
    (never resumed) and the overrides."""
    from metarec_dist.config import Setting, load_config

    # Settings, not --set strings: a path is not YAML (an --out with " #" or ": " in it would be cut or read
    # as a mapping), and a mistake names reproduce's flag rather than a --set the user never typed.
    return load_config(
        spec.config,
        [
            Setting("train.seed", spec.seed, "reproduce --seeds"),
            Setting("runtime.storage_path", str(out / "runs"), "reproduce --out"),
            Setting("runtime.run_name", spec.run_name, "reproduce --method"),
            "checkpoint.resume=false",
            "logging.wandb=off",
            *spec.all_overrides,
        ],
    )


def share_first_stages(specs: list[RunSpec], out: Path) -> list[RunSpec]:
    """``specs`` with ``shared_run`` set where a run is exactly the first stage (``train.pretrain``) of
    another spec's run of the same seed and protocol (the recipe and its baseline: `coldstart` starts from a
    converged `sasrec` that IS the `sasrec` baseline): that run is then evaluated from the other's first
    stage instead of being trained twice. Same settings give the same weights (one process, one thread)."""
    from metarec_dist.train.pretrain import pretrain_config, same_run, stage_dir

    stages = []
    for spec in specs:
        cfg = spec_config(spec, out)
        stage = pretrain_config(cfg)
        if stage is not None:
            stages.append((spec, stage, str(stage_dir(cfg))))
    shared = []
    for spec in specs:
        cfg = spec_config(spec, out)
        match = next(
            (
                folder
                for other, stage, folder in stages
                if (other.seed, other.protocol) == (spec.seed, spec.protocol) and same_run(stage, cfg)
            ),
            None,
        )
        shares = match is not None and not cfg.train.pretrain
        shared.append(dataclasses.replace(spec, shared_run=match) if shares else spec)
    return shared


def shared_checkpoint(spec: RunSpec, cfg: Config) -> str | None:
    """The finished first stage ``spec.shared_run`` when it was trained with ``cfg``'s settings; None (the
    run trains itself) otherwise."""
    from metarec_dist.errors import UserError
    from metarec_dist.train.pretrain import finished_run

    try:
        point = finished_run(Path(spec.shared_run or ""), cfg)
    except UserError as exc:
        log.warning("%s: not sharing %s (%s); training it", spec.run_name, spec.shared_run, exc)
        return None
    if point is None:
        log.info("%s: %s did not finish; training it", spec.run_name, spec.shared_run)
        return None
    log.info("%s: the same run as the first stage %s; evaluating that", spec.run_name, point)
    return str(point)


def first_stage_budget(cfg: Config, data: UserSplits) -> dict[str, float]:
    """The training budget (``training_budget``) of the first stage of ``cfg``'s run."""
    from metarec_dist.checkpoint import read_client_state
    from metarec_dist.train.pretrain import finished_run, pretrain_config, stage_dir

    stage = pretrain_config(cfg)
    assert stage is not None
    point = finished_run(stage_dir(cfg), stage)
    client = read_client_state(point) if point is not None else {}
    best = (client.get("early_stop") or {}).get("best_step")
    trained = (int(client.get("step", stage.train.meta_steps)), None if best is None else int(best))
    return training_budget(stage, data.train, data.num_items, trained)


def validation_score(protocol: Any, loaded: Any, adaptation: dict[str, Any]) -> float:
    """Mean NDCG@10 over the shot counts on the tuning validation users, at the chosen adaptation: the
    number every variant is chosen by (the adaptation search already has it; methods that do not adapt get
    one pass)."""
    from metarec_dist.eval.protocol import CRITERION

    if adaptation.get(f"val_{CRITERION}") is not None:
        return float(adaptation[f"val_{CRITERION}"])
    scorer = protocol.scorer(loaded, adaptation["inner_lr"])
    res = protocol.per_user(
        scorer, protocol.tune_users(), adaptation["steps"], user_features=protocol.tune_user_features()
    )
    return float(sum(res[k][CRITERION].mean() for k in protocol.shots) / len(protocol.shots))


def trained_steps(loaded: Any) -> tuple[int, int | None]:
    """The meta-steps a run trained (fewer than ``train.meta_steps`` when it stopped early) and, with early
    stopping, the step of the weights it kept (the best validated)."""
    from metarec_dist.checkpoint import CLIENT_STATE, read_client_state

    steps = int(loaded.meta.get("step", loaded.cfg.train.meta_steps))
    client = read_client_state(loaded.source) if (loaded.source / CLIENT_STATE).is_file() else {}
    best = (client.get("early_stop") or {}).get("best_step")
    return steps, None if best is None else int(best)


def training_budget(
    cfg: Any,
    train_sequences: list[Any],
    num_items: int,
    trained: tuple[int, int | None] | None = None,
    probe_batches: int = 20,
) -> dict[str, float]:
    """What the run trained on, for budget comparisons across methods: meta-steps (``trained``: the steps
    it ran and the best validated one it kept, when it stopped early), tasks, and the real (non-padding)
    tokens, measured on ``probe_batches`` batches of the run's own task distribution."""
    from metarec_dist.tasks.sampler import TaskSampler

    sampler = TaskSampler(train_sequences, cfg.tasks, num_items, seed=12345)
    per_task = [
        float(sampler.sample(cfg.meta.meta_batch_size).attention_mask.sum(1).float().mean())
        for _ in range(probe_batches)
    ]
    steps, best = trained or (cfg.train.meta_steps, None)
    tasks = steps * cfg.meta.meta_batch_size
    tokens = tasks * sum(per_task) / len(per_task)
    kept = {} if best is None else {"best_step": best}
    return {"meta_steps": steps, "tasks": tasks, "tokens": round(tokens), **kept}


def train_one(cfg: Config, run_dir: Path, keep_first_stage: bool = False) -> str:
    """A fresh training run (its first stage, ``train.pretrain``, first) on ``training_device``; returns its
    final checkpoint. ``keep_first_stage`` (``--reuse-runs``): a finished first stage of the same settings
    is kept. The run
    folder is locked as `metarec train` locks it, before it is cleared: another process training in it
    (a reproduction started twice) is refused, not deleted under; the lock also records the folder
    relative data files are read from (run_folder.RUN_INFO), for evaluate / export later."""
    from metarec_dist.eval.loading import load_prepared
    from metarec_dist.run_folder import RunLock
    from metarec_dist.runtime.context import LocalContext
    from metarec_dist.train.pretrain import run_pretrain
    from metarec_dist.train.trainer import MetaTrainer

    def fit(c: Config) -> str:
        folder = Path(c.runtime.storage_path) / c.runtime.run_name
        context = LocalContext(folder, c.checkpoint.keep, training_device(c))
        return MetaTrainer(c, context, data).fit()["checkpoint"]

    def fit_stage(c: Config) -> str:
        with RunLock(Path(c.runtime.storage_path) / c.runtime.run_name):
            return fit(c)

    with RunLock(run_dir):
        clear_run_dir(run_dir, cfg, keep_first_stage)  # a stale run of another config must never be resumed
        data = load_prepared(cfg).user_splits()
        run_pretrain(cfg, fit_stage)  # the same data: the first stage takes this config's data section
        return fit(cfg)


def clear_run_dir(run_dir: Path, cfg: Config, keep_first_stage: bool) -> None:
    """Empty the run folder (this tool's own output; its lock and data-folder record stay: ``train_one``
    has just written them), all of it, or all but a first stage that finished with the settings of
    ``cfg``'s ``train.pretrain``."""
    from metarec_dist.errors import UserError
    from metarec_dist.run_folder import LOCK_FILE, RUN_INFO
    from metarec_dist.train.pretrain import PRETRAIN_DIR, finished_run, pretrain_config, stage_dir

    stage = pretrain_config(cfg)
    keep = None
    if keep_first_stage and stage is not None and run_dir.is_dir():
        try:
            keep = stage_dir(cfg) if finished_run(stage_dir(cfg), stage) is not None else None
        except UserError:
            keep = None
    if keep is not None:
        log.info("--reuse-runs: keeping the finished first stage %s", keep)
    kept = {LOCK_FILE, RUN_INFO, *([PRETRAIN_DIR] if keep is not None else [])}  # the first two: this run's
    for child in run_dir.iterdir() if run_dir.is_dir() else ():
        if child.name in kept:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def reused_checkpoint(run_dir: Path, cfg: Config) -> str | None:
    """The final checkpoint of the run in ``run_dir`` if it finished and was trained with ``cfg``'s training
    settings (evaluation-only ones may differ: ``checkpoint.config_changes``); None (train it) otherwise."""
    from metarec_dist.config import resolve_loss
    from metarec_dist.eval.loading import load_model, resolve_checkpoint
    from metarec_dist.train.pretrain import same_run

    try:
        folder = resolve_checkpoint(run_dir)
    except ValueError:
        log.info("--reuse: no finished run in %s; training it", run_dir)
        return None
    if not finished(folder, cfg):
        log.info("--reuse: %s did not finish (%s); training it again", run_dir, folder.name)
        return None
    if not first_stage_finished(cfg):
        log.info("--reuse: the first stage of %s did not finish with these settings; training again", run_dir)
        return None
    loaded = load_model(folder)
    # The trainer records model.loss resolved (auto -> full/sampled): compare with cfg resolved alike. The
    # first stage was compared by its settings just above, not by its config file's path, which is
    # absolute and moves with the checkout (a reproduction run from another clone is the same run).
    stored = dataclasses.replace(
        loaded.cfg, train=dataclasses.replace(loaded.cfg.train, pretrain=cfg.train.pretrain)
    )
    if not same_run(stored, resolve_loss(cfg, int(loaded.meta["num_items"]))):
        log.info("--reuse: %s was trained with other settings; training it again", run_dir)
        return None
    return str(folder)


def finished(folder: Path, cfg: Config) -> bool:
    """The run of ``folder`` ran all its meta-steps, or stopped early (``train.early_stop_patience``)."""
    from metarec_dist.train.pretrain import run_finished

    return run_finished(folder, cfg)


def first_stage_finished(cfg: Config) -> bool:
    """True without ``train.pretrain``; else whether its first stage finished with the same settings (a
    two-stage run is finished only when both stages are)."""
    from metarec_dist.errors import UserError
    from metarec_dist.train.pretrain import finished_run, pretrain_config, stage_dir

    stage = pretrain_config(cfg)
    if stage is None:
        return True
    try:
        return finished_run(stage_dir(cfg), stage) is not None
    except UserError:
        return False


def parse_method(text: str) -> tuple[str, str]:
    name, sep, config = text.partition("=")
    if not sep or not name or not Path(config).is_file():
        raise ValueError(f"--method {text!r}: expected NAME=CONFIG.yaml with an existing file")
    return name, config


def run_all(
    specs: list[RunSpec], out: Path, shots: list[int], jobs: int, reuse: bool = False
) -> dict[str, list[tuple[PerUser, dict]]]:
    """Every spec in ``jobs`` worker processes; results grouped by method label, in seed order."""
    grouped: dict[str, list[tuple[PerUser, dict]]] = {}
    ctx = get_context("spawn")  # a fresh interpreter per worker: no forked torch thread pools
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker) as pool:
        try:
            # Runs that evaluate another run's first stage (shared_run) wait until the others have trained.
            for wave in ([s for s in specs if not s.shared_run], [s for s in specs if s.shared_run]):
                futures = [pool.submit(train_and_evaluate, s, out, shots, reuse) for s in wave]
                for f in futures:
                    for label, value in f.result().items():
                        grouped.setdefault(label, []).append(value)
        except BaseException:
            stop_workers(pool)
            raise
    for runs in grouped.values():
        runs.sort(key=lambda r: r[1]["seed"])
    return grouped


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the runs not started and end the running ones. Leaving the pool's ``with`` block waits for
    its workers: after an interrupt (a SIGTERM, or SIGINT to this process alone) that was until every
    running training had finished, minutes to an hour. Ctrl-C in a terminal reaches the workers too."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # terminate_workers(): 3.14+
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        proc.terminate()
    for proc in processes:
        proc.join(timeout=5)
        if proc.is_alive():  # a training busy in native code on a loaded machine: do not wait for it
            proc.kill()
            proc.join(timeout=5)


def collect(specs: list[RunSpec], out: Path) -> dict[str, list[tuple[PerUser, dict]]]:
    """The per-user results already in ``out`` for these specs (``--collect``: publish without training;
    a spec with no identical earlier run is left out, so seeds may differ between methods)."""
    grouped: dict[str, list[tuple[PerUser, dict]]] = {}
    for spec in specs:
        for label, value in (reusable(spec, out) or {}).items():
            grouped.setdefault(label, []).append(value)
    if not grouped:
        raise ValueError(f"--collect: no per-user results for these methods and seeds in {out / 'per_user'}")
    for runs in grouped.values():
        runs.sort(key=lambda r: r[1]["seed"])
    return grouped


def parse_pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition("=")
    if not sep or not a or not b:
        raise ValueError(f"--pair {text!r}: expected METHOD=BASELINE, e.g. fomaml+features=fomaml")
    return a, b


def baselines(protocol: str, methods: list[tuple[str, str]], overrides: list[str], shots: list[int]) -> list:
    """The protocol's reference methods on the first config's data: popularity and co-occurrence
    (cold_start), content kNN and random (new-items; mixed adds popularity), read from the first config that
    declares item features."""
    from metarec_dist.config import load_config
    from metarec_dist.eval.loading import load_prepared

    extra = ["data.protocol=new_items"] if protocol in ITEM_PROTOCOLS else []
    cfgs = [load_config(config, [*overrides, *extra]) for _, config in methods]
    if protocol == "cold_start":
        cfg = cfgs[0]
        return build_protocol(protocol, load_prepared(cfg).user_splits(), shots, cfg).baselines("test")
    with_items = [c for c in cfgs if c.data.item_features]
    if not with_items:
        raise ValueError(
            f"--protocol {protocol}: no --method config declares data.item_features (content kNN)"
        )
    cfg = with_items[0]
    protocol_obj = build_protocol(protocol, load_prepared(cfg).user_splits(), shots, cfg)
    return protocol_obj.baselines("test", seed=0)  # type: ignore[attr-defined]  # an item protocol


def output_paths(
    out: Path, json_arg: str | None, plot_arg: str | None, markdown_arg: str | None
) -> tuple[Path, Path | None, Path | None]:
    """Where the JSON, the plot and the Markdown tables go: the named files, else inside ``out`` (an
    exploratory run never rewrites a published page); ``''`` for the plot or the tables: none."""

    def pick(arg: str | None, default: str) -> Path | None:
        if arg is None:
            return out / default
        return Path(arg) if arg else None

    json_path = Path(json_arg) if json_arg else out / "results.json"
    return json_path, pick(plot_arg, "ndcg_vs_k.png"), pick(markdown_arg, "results.md")


def build_parser() -> argparse.ArgumentParser:
    from metarec_dist.eval.cli import protocol_option

    # The docstring's whole first paragraph: its first line alone stops mid-sentence.
    p = argparse.ArgumentParser(
        prog="python -m metarec_dist.eval.reproduce", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--method", action="append", required=True, help="NAME=CONFIG.yaml (repeatable)")
    p.add_argument("--finetune", action="append", default=[], help="a none/sasrec method to also fine-tune")
    p.add_argument(
        "--fuse",
        action="append",
        default=[],
        help="a method to also report fused with the co-occurrence counts (METHOD+cooc)",
    )
    p.add_argument(
        "--baseline",
        help="the method every paired interval is against (default: the method named 'none' if there is "
        "one and no --pair; else no paired intervals)",
    )
    p.add_argument("--pair", action="append", default=[], help="METHOD=BASELINE: that method's own baseline")
    p.add_argument("--protocol", default="cold_start", **protocol_option(PROTOCOLS))
    p.add_argument(
        "--reuse-runs",
        action="store_true",
        help="evaluate finished runs (checkpoints) of the same settings in --out, train the rest",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="skip runs whose per-user results are already in --out (same config and overrides)",
    )
    p.add_argument(
        "--collect",
        action="store_true",
        help="train nothing: publish the per-user results already in --out for these methods and seeds",
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default: 0,1,2)")
    p.add_argument("--shots", default="1,3,5,10", help="support sizes K evaluated (default: 1,3,5,10)")
    p.add_argument("--jobs", type=int, default=2, help="training processes, one thread each (default: 2)")
    p.add_argument(
        "--device",
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where every run is evaluated (default: where it trained: cuda:0 with runtime.use_gpu=true, "
        "else cpu; not with eval.workers > 1 on a GPU)",
    )
    p.add_argument("--set", action="append", default=[], help="override for every method, e.g. data.name=...")
    p.add_argument("--out", default="runs/ml100k-repro", help="runs and per-user results")
    p.add_argument("--json", help="the summary JSON (default: <out>/results.json)")
    p.add_argument("--plot", help="the NDCG@10-vs-K plot (default: <out>/ndcg_vs_k.png; '' for none)")
    p.add_argument(
        "--markdown", help="its generated section is rewritten (default: <out>/results.md; '' for none)"
    )
    p.add_argument("--section", help="the name of the generated section (several on one page)")
    return p


def int_list(text: str, flag: str, minimum: int) -> list[int]:
    """``--seeds`` / ``--shots``: comma-separated integers, each at least ``minimum``, none twice (two runs
    of one seed would share a run folder)."""
    from metarec_dist.errors import UserError

    try:
        values = [int(s) for s in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated integers, e.g. {flag} 0,1,2") from None
    if any(v < minimum for v in values):
        raise UserError(f"{flag} {text!r}: every value must be at least {minimum}")
    if len(set(values)) < len(values):
        raise UserError(f"{flag} {text!r}: a value is given twice")
    return values


def reference_names(protocol: str) -> list[str]:
    """The training-free methods ``baselines`` adds for ``protocol``."""
    from metarec_dist.eval.item_protocol import CONTENT_KNN, RANDOM
    from metarec_dist.eval.protocol import COOCCURRENCE

    if protocol == "cold_start":
        return ["popularity", COOCCURRENCE]
    return [CONTENT_KNN, RANDOM, *(["popularity"] if protocol == "mixed" else [])]


def default_baseline(args: argparse.Namespace, methods: list[tuple[str, str]]) -> str | None:
    """``--baseline``, else the method named ``none`` (the no-adaptation baseline) if there is one and no
    ``--pair``; else no paired intervals."""
    if args.baseline is not None or args.pair:
        return args.baseline
    return "none" if "none" in {name for name, _ in methods} else None


def check_names(
    args: argparse.Namespace, methods: list[tuple[str, str]], baseline: str | None, pairs: dict[str, str]
) -> None:
    """Every name the options refer to exists, before anything trains (``build_report`` would find out
    only after the last run): ``--finetune`` / ``--fuse`` name a ``--method``; ``--baseline`` and
    ``--pair`` a method that will be reported (a method, its ``+cooc`` / ``+finetune`` variant, or a
    training-free reference of the protocol)."""
    from metarec_dist.errors import UserError
    from metarec_dist.eval.protocol import FUSED

    names = [name for name, _ in methods]
    if len(set(names)) < len(names):
        raise UserError(f"--method: a NAME is given twice ({', '.join(names)}); each method needs its own")
    for flag, given in (("--finetune", args.finetune), ("--fuse", args.fuse)):
        for name in given:
            if name not in names:
                raise UserError(f"{flag} {name}: not a --method NAME (the methods: {', '.join(names)})")
    reported = [
        *names,
        *(f"{n}{FUSED}" for n in args.fuse),
        *(f"{n}+finetune" for n in args.finetune),
        *reference_names(args.protocol),
    ]
    wanted = [("--baseline", baseline)] if baseline is not None else []
    wanted += [("--pair", name) for pair in pairs.items() for name in pair]
    for flag, name in wanted:
        if name not in reported:
            raise UserError(f"{flag} {name}: not among the methods this run reports ({', '.join(reported)})")


def check_devices(args: argparse.Namespace, methods: list[tuple[str, str]]) -> None:
    """Every run's GPU (``check_gpu_visible``, ``evaluation_device``) is visible, and no GPU evaluation is
    asked of ``eval.workers`` Ray actors, which have no GPU: refused before anything trains, not in a worker
    after its training."""
    from metarec_dist.config import load_config
    from metarec_dist.eval.device import check_workers
    from metarec_dist.train.launch import check_gpu_visible

    for _, config in methods:
        cfg = load_config(config, args.set)
        check_gpu_visible(cfg)
        evaluation = evaluation_device(cfg, args.device)
        check_workers(evaluation, cfg.eval.workers, "eval.workers", "--set eval.workers=1")


def run_specs(args: argparse.Namespace, methods: list[tuple[str, str]], seeds: list[int]) -> list[RunSpec]:
    """One run per (seed, method), with the options that name it; first stages shared where they can be."""
    specs = [
        RunSpec(
            name,
            config,
            seed,
            name in args.finetune,
            tuple(args.set),
            args.protocol,
            args.reuse_runs,
            fuse=name in args.fuse,
            device=args.device,
        )
        for seed in seeds
        for name, config in methods
    ]
    return share_first_stages(specs, Path(args.out))


def reused_runs(args: argparse.Namespace, methods: list[tuple[str, str]], seeds: list[int]) -> list[int]:
    """``[runs whose per-user results --reuse takes from --out, all runs]`` ([0, n] without --reuse): the
    page must not call the minutes of a call that trained nothing "the runtime of the reproduction"."""
    specs = run_specs(args, methods, seeds)
    if not args.reuse or args.collect:
        return [0, len(specs)]
    return [sum(reusable(s, Path(args.out)) is not None for s in specs), len(specs)]


def method_results(
    args: argparse.Namespace, methods: list[tuple[str, str]], seeds: list[int], shots: list[int]
) -> list[MethodResult]:
    """Train and evaluate (or collect) every run; each method's results averaged over seeds, plus the
    training-free baselines of the protocol."""
    out = Path(args.out)
    specs = run_specs(args, methods, seeds)
    grouped = collect(specs, out) if args.collect else run_all(specs, out, shots, args.jobs, args.reuse)
    results: list[MethodResult] = []
    for label, runs in grouped.items():
        info = {"seeds": [r[1]["seed"] for r in runs], "per_seed": [r[1] for r in runs]}
        results.append(mean_over_seeds(label, [r[0] for r in runs], info))
    return results + baselines(args.protocol, methods, args.set, shots)


def main(argv: list[str] | None = None) -> int:
    """Ctrl-C or SIGTERM: the training processes are ended, nothing is published, status 130."""
    from metarec_dist.interrupts import sigterm_as_interrupt

    args = build_parser().parse_args(argv)
    json_path, plot_path, markdown_path = output_paths(Path(args.out), args.json, args.plot, args.markdown)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        with sigterm_as_interrupt():
            return reproduce(args, json_path, plot_path, markdown_path)
    except KeyboardInterrupt:
        print(
            f"interrupted: nothing published; the per-user results of the runs that finished are in "
            f"{Path(args.out) / 'per_user'}: the same command with --reuse trains only the others",
            file=sys.stderr,
        )
        return 130


def reproduce(
    args: argparse.Namespace, json_path: Path, plot_path: Path | None, markdown_path: Path | None
) -> int:
    from metarec_dist.config import load_config
    from metarec_dist.errors import UserError
    from metarec_dist.eval.publish import check_markdown, publish

    t0 = time.perf_counter()
    try:
        methods = [parse_method(m) for m in args.method]
        pairs = dict(parse_pair(x) for x in args.pair)
        baseline = default_baseline(args, methods)
        seeds = int_list(args.seeds, "--seeds", 0)
        shots = sorted(int_list(args.shots, "--shots", 1))
        if args.jobs < 1:
            raise UserError(f"--jobs {args.jobs}: must be at least 1 (training processes)")
        check_names(args, methods, baseline, pairs)
        check_devices(args, methods)  # no GPU, or a GPU with the CPU-only actors: before anything trains
        check_markdown(markdown_path, args.section)  # a page it cannot update fails now, not at the end
        reused = reused_runs(args, methods, seeds)  # before the runs: what this call did not train
        results = method_results(args, methods, seeds, shots)
        first_cfg = load_config(methods[0][1], args.set)
        publish(
            results,
            baseline,
            first_cfg.eval.n_boot,
            json_path,
            plot_path,
            markdown_path,
            {
                "runtime_s": round(time.perf_counter() - t0, 1),
                "seeds": seeds,
                "configs": dict(methods),
                "overrides": args.set,
                "data": first_cfg.data.name or first_cfg.data.path,
                **({} if args.protocol == "cold_start" else {"protocol": args.protocol}),
                **({"collected": True} if args.collect else {}),
                **({"reused_runs": reused} if reused[0] else {}),
            },
            pairs=pairs,
            section=args.section,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"runtime_s": round(time.perf_counter() - t0, 1), "json": str(json_path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
