"""``metarec train``: run the trainer in this process (runtime.backend=local) or on Ray (backend=ray).

Either way the run folder is ``run_folder.run_path(cfg.runtime)`` and is locked for the whole run. With
``train.pretrain`` the first stage runs first, the same way, in ``<run folder>/pretrain`` (train/pretrain.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metarec_dist.config import Config


def train_local(cfg: Config) -> dict[str, Any]:
    from metarec_dist.data import prepare_data
    from metarec_dist.errors import UserError
    from metarec_dist.metrics.loggers import build_logger
    from metarec_dist.run_folder import RunLock, local_run_dir, record_data_folder, storage_root
    from metarec_dist.runtime.allocator import apply_process_settings
    from metarec_dist.runtime.context import LocalContext
    from metarec_dist.train.trainer import MetaTrainer

    check_one_process(cfg)
    apply_process_settings(cfg.runtime)
    check_gpu_visible(cfg)
    folder = local_run_dir(cfg.runtime)
    if folder is None:
        raise UserError(
            f"runtime.storage_path={cfg.runtime.storage_path!r}: cloud storage needs runtime.backend=ray"
        )
    with RunLock(folder, record_data=False):
        data = prepare_data(cfg.data).user_splits()
        bar = BarOnceResumed()
        # storage_root, as the Ray workers and the summary: the W&B run id is made from it
        root = storage_root(cfg.runtime)
        # W&B starts in MetaTrainer.fit, once the resume is accepted and steps are left to train
        logger = build_logger(
            cfg.logging, cfg.runtime.run_name, root, cfg.to_dict(), True, folder, (bar,), defer_wandb=True
        )
        try:
            device = "cuda:0" if cfg.runtime.use_gpu else None
            trainer = MetaTrainer(cfg, LocalContext(folder, cfg.checkpoint.keep, device), data, logger)
            resumed = trainer.resume()  # refused: an error with no bar above it, the run's record kept
            # Where the relative data files were read from, now that they were, and the resume accepted: a
            # run from a folder without them (or with other data) replaced a good record with its own.
            record_data_folder(folder)
            bar.open(cfg, resumed)
            return {**trainer.fit(), "run_path": str(folder)}
        finally:
            logger.close()


class BarOnceResumed:
    """The run's progress bar as a logger part, drawn by ``open`` once the resume is accepted: drawn before
    the trainer's resume checks, it left a ``meta-train [run]: 50%|...| 4/8`` line above the refusal.
    Given ``cfg`` (and the checkpoint the run resumes from), it is drawn at the first ``log`` unless opened
    before: the Ray driver's, whose workers check the resume and report only once it is accepted."""

    def __init__(self, cfg: Config | None = None, resumed_from: Path | None = None) -> None:
        self.cfg, self.resumed_from = cfg, resumed_from
        self.bar: Any = None

    def open(self, cfg: Config, resumed_from: Path | None, at: int = 0) -> None:
        """Draw the bar of ``cfg``'s run, from the meta-step of the checkpoint it resumed from (or 0), or
        from ``at``, the first reported step, when later."""
        from metarec_dist.metrics.progress import ProgressBar

        self.bar = ProgressBar.for_run(cfg, resumed_from, at)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.bar is None and self.cfg is not None:
            # Drawn at this report: counting the steps before it as its first update gave a rate of
            # 252,061 step/s and an ETA of 00:00 (the Ray quickstart's first line).
            self.open(self.cfg, self.resumed_from, step)
        if self.bar is not None:
            self.bar.log(metrics, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def check_one_process(cfg: Config) -> None:
    """The local backend trains in this one process (``LocalContext``: rank 0 of 1, on ``cuda:0`` with
    ``runtime.use_gpu``): ``runtime.num_workers=N`` there was silently ignored, one process training the whole
    meta-batch on one device while the run recorded N workers. Data-parallel workers (one GPU each) are
    Ray Train's: ``runtime.backend=ray``."""
    from metarec_dist.errors import UserError

    n = cfg.runtime.num_workers
    if cfg.runtime.backend != "local" or n == 1:
        return
    device = "one GPU, cuda:0" if cfg.runtime.use_gpu else "the CPU"
    each = ", one GPU each" if cfg.runtime.use_gpu else ""
    raise UserError(
        f"runtime.num_workers={n} with runtime.backend=local: the local backend trains in this one process "
        f"on {device}; set runtime.backend=ray to train {n} data-parallel workers{each}, or "
        "runtime.num_workers=1"
    )


def check_gpu_visible(cfg: Config, cluster_here: bool = False) -> None:
    """``runtime.use_gpu=true`` on this machine (the local backend, or a Ray cluster started here) needs a
    CUDA device torch can see: without one the trainer failed after reading the data, with torch's internal
    AttributeError (a CPU-only build) as a traceback; on Ray, after starting the cluster (a GPU Ray sees and
    a CPU-only torch: the workers' NCCL process group failed, in nested tracebacks). ``cluster_here``: the
    Ray cluster this process starts, where joining another one with GPUs is a way out too."""
    import torch

    from metarec_dist.errors import UserError

    if not cfg.runtime.use_gpu or torch.cuda.is_available():
        return
    build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    elsewhere = ", or join a Ray cluster with GPUs (RAY_ADDRESS)" if cluster_here else ""
    raise UserError(
        f"runtime.use_gpu=true: torch {torch.__version__} ({build}) sees no CUDA GPU on this machine; set "
        f"runtime.use_gpu=false to train on the CPU, or run where a GPU is visible (nvidia-smi){elsewhere}"
    )


def train(cfg: Config, verbose: bool = False) -> dict[str, Any]:
    """Train the run of ``cfg``: its first stage (``train.pretrain``) when it has one and that is not
    finished yet, then the run itself, which starts from the first stage's weights."""
    from metarec_dist.run_folder import local_run_dir
    from metarec_dist.train.freeze import check_names
    from metarec_dist.train.init_from import absolute_source, check_resumed_source, check_source, resumes
    from metarec_dist.train.pretrain import run_pretrain

    folder = local_run_dir(cfg.runtime)
    resuming = resumes(folder, cfg.checkpoint.resume)
    if not resuming:  # a resume does not read it
        check_source(cfg.train.init_from_path, cfg)  # a wrong path, model or features fail now, not later
    cfg = absolute_source(cfg)  # Ray workers run in their own folders
    if resuming:  # ... nor would it start from another source than the run's: refused now
        check_resumed_source(folder, cfg)
    check_names(cfg.model, cfg.train.freeze)  # a typo too
    stage = run_pretrain(cfg, lambda stage_cfg: train_one(stage_cfg, verbose))
    result = train_one(cfg, verbose)
    return result if stage is None else {**result, "pretrain_path": str(stage)}


def train_one(cfg: Config, verbose: bool = False) -> dict[str, Any]:
    """One run (one stage), here or on Ray."""
    if cfg.runtime.backend == "ray":
        from metarec_dist.runtime.ray_launcher import train_on_ray

        return train_on_ray(cfg, verbose=verbose)
    return train_local(cfg)


def interrupted_message(cfg: Config, step: int | None) -> str:
    """What an interrupted ``metarec train`` prints: the meta-step it stopped at (when known) and where a
    re-run starts: the newest complete checkpoint of the stage that was training, else step 0."""
    from metarec_dist.checkpoint import latest_complete, read_client_state
    from metarec_dist.run_folder import local_run_dir
    from metarec_dist.train.pretrain import finished_run, pretrain_config, stage_dir

    at = "interrupted" if step is None else f"interrupted at meta-step {step}"
    folder, what = local_run_dir(cfg.runtime), "run"
    if folder is None:  # cloud storage: Ray's checkpoints, not listed from here
        return f"{at}; re-run the same command to resume from its newest checkpoint, if it saved one"
    stage = pretrain_config(cfg)
    if stage is not None and finished_run(stage_dir(cfg), stage) is None:
        folder, cfg, what = stage_dir(cfg), stage, "first stage (train.pretrain)"
    point = latest_complete(folder) if folder.is_dir() else None
    if point is None:
        return (
            f"{at}; the {what} in {folder} has no checkpoint (checkpoint.every is {cfg.checkpoint.every}): "
            "a re-run starts at meta-step 0"
        )
    saved = read_client_state(point)["step"]
    return f"{at}; a re-run of the same command resumes the {what} from meta-step {saved} ({point})"
