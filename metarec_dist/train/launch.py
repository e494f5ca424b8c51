"""``metarec train``: run the trainer in this process (runtime.backend=local) or on Ray (backend=ray).

Either way the run folder is ``run_folder.run_path(cfg.runtime)`` and is locked for the whole run. With
``train.pretrain`` the first stage runs first, the same way, in ``<run folder>/pretrain`` (train/pretrain.py).
"""

from __future__ import annotations

from typing import Any

from metarec_dist.config import Config


def train_local(cfg: Config) -> dict[str, Any]:
    from metarec_dist.data import prepare_data
    from metarec_dist.errors import UserError
    from metarec_dist.metrics.loggers import build_logger
    from metarec_dist.metrics.progress import ProgressBar
    from metarec_dist.run_folder import RunLock, local_run_dir
    from metarec_dist.runtime.allocator import apply_process_settings
    from metarec_dist.runtime.context import LocalContext
    from metarec_dist.train.trainer import MetaTrainer

    apply_process_settings(cfg.runtime)
    folder = local_run_dir(cfg.runtime)
    if folder is None:
        raise UserError(
            f"runtime.storage_path={cfg.runtime.storage_path!r}: cloud storage needs runtime.backend=ray"
        )
    with RunLock(folder):
        data = prepare_data(cfg.data).user_splits()
        bar = ProgressBar(cfg.train.meta_steps)
        logger = build_logger(
            cfg.logging, cfg.runtime.run_name, str(folder.parent), cfg.to_dict(), True, folder, (bar,)
        )
        try:
            device = "cuda:0" if cfg.runtime.use_gpu else None
            trainer = MetaTrainer(cfg, LocalContext(folder, cfg.checkpoint.keep, device), data, logger)
            return {**trainer.fit(), "run_path": str(folder)}
        finally:
            logger.close()


def train(cfg: Config, verbose: bool = False) -> dict[str, Any]:
    """Train the run of ``cfg``: its first stage (``train.pretrain``) when it has one and that is not
    finished yet, then the run itself, which starts from the first stage's weights."""
    from metarec_dist.train.pretrain import run_pretrain

    stage = run_pretrain(cfg, lambda stage_cfg: train_one(stage_cfg, verbose))
    result = train_one(cfg, verbose)
    return result if stage is None else {**result, "pretrain_path": str(stage)}


def train_one(cfg: Config, verbose: bool = False) -> dict[str, Any]:
    """One run (one stage), here or on Ray."""
    if cfg.runtime.backend == "ray":
        from metarec_dist.runtime.ray_launcher import train_on_ray

        return train_on_ray(cfg, verbose=verbose)
    return train_local(cfg)
