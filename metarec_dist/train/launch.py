"""``metarec train``: run the trainer in this process (runtime.backend=local) or on Ray (backend=ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metarec_dist.config import Config


def run_dir(cfg: Config) -> Path:
    return Path(cfg.runtime.storage_path).expanduser().resolve() / cfg.runtime.run_name


def train_local(cfg: Config, verbose: bool = False) -> dict[str, Any]:
    import torch

    from metarec_dist.data import prepare_data
    from metarec_dist.metrics.loggers import build_logger
    from metarec_dist.metrics.progress import ProgressBar
    from metarec_dist.runtime.context import LocalContext
    from metarec_dist.train.trainer import MetaTrainer

    if cfg.runtime.torch_threads:
        torch.set_num_threads(cfg.runtime.torch_threads)
    folder = run_dir(cfg)
    data = prepare_data(cfg.data).user_splits()
    bar = ProgressBar(cfg.train.meta_steps)
    logger = build_logger(
        cfg.logging, cfg.runtime.run_name, str(folder.parent), cfg.to_dict(), True, folder, extra=(bar,)
    )
    try:
        device = "cuda:0" if cfg.runtime.use_gpu else None
        trainer = MetaTrainer(cfg, LocalContext(folder, cfg.checkpoint.keep, device), data, folder, logger)
        return {**trainer.fit(), "run_path": str(folder)}
    finally:
        logger.close()


def train(cfg: Config, verbose: bool = False) -> dict[str, Any]:
    if cfg.runtime.backend == "ray":
        from metarec_dist.runtime.ray_launcher import train_on_ray

        return train_on_ray(cfg, verbose=verbose)
    return train_local(cfg, verbose=verbose)
