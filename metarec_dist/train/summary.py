"""The final summary printed by ``metarec train``: metrics table, checkpoint path, W&B run and how to sync."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from metarec_dist.config import Config


def wandb_lines(cfg: Config, run_path: str | None, used: dict[str, Any] | None = None) -> list[str]:
    """``used``: the W&B run the logging process recorded (``result["wandb"]``); else this process's guess
    from its own environment, which is the logging process's in a local run, not always on Ray."""
    if cfg.logging.wandb == "off":
        return ["W&B:        off (logging.wandb=off)"]
    from metarec_dist.metrics.wandb_logger import (
        describe,
        entity_name,
        offline_folders,
        project_name,
        read_record,
        run_id,
        wandb_mode,
    )
    from metarec_dist.run_folder import storage_root

    rid = run_id(cfg.runtime.run_name, storage_root(cfg.runtime))
    used = used or read_record(run_path, rid)
    if used is not None:
        lines = [f"W&B run:    {describe(used)}"]
    else:  # cloud storage: what the workers' logger uses, as far as this environment says
        mode = wandb_mode(cfg.logging.wandb) or f"WANDB_MODE={os.environ.get('WANDB_MODE')}"
        entity = entity_name(cfg.logging.entity) or "<default entity>"
        lines = [f"W&B run:    {entity}/{project_name(cfg.logging.project)}/{rid} ({mode})"]
    if run_path and "://" not in run_path:  # offline runs' files are in a local run folder only
        offline = offline_folders(Path(run_path), rid)
        if offline:
            lines.append(f"W&B sync:   wandb sync {' '.join(str(p) for p in offline)}")
    elif used is not None and used.get("sync_dir"):  # cloud storage: the files are on worker 0's node
        lines.append(f"W&B sync:   wandb sync {used['sync_dir']} (on the node worker 0 ran on)")
    return lines


def format_summary(result: dict[str, Any], cfg: Config) -> str:
    scalars = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    width = max((len(k) for k in scalars), default=10)
    lines = ["", "== metarec train: summary ==", f"{'metric'.ljust(width)}  value", "-" * (width + 14)]
    lines += [f"{k.ljust(width)}  {v:.5g}" for k, v in sorted(scalars.items())]
    lines += [
        "-" * (width + 14),
        f"checkpoint: {result.get('checkpoint')}",
        f"run folder: {result.get('run_path')}",
        *([f"1st stage:  {result['pretrain_path']} (train.pretrain)"] if result.get("pretrain_path") else []),
        *(
            [f"started:    from {result['init_from']}"]
            if result.get("init_from") and not cfg.train.pretrain
            else []
        ),
        *wandb_lines(cfg, result.get("run_path"), result.get("wandb")),
        next_step_line(result, cfg),
    ]
    return "\n".join(lines)


def next_step_line(result: dict[str, Any], cfg: Config) -> str:
    """The run is finished (every step done, or stopped early): how to train further, never "re-run to
    continue" (a re-run alone trains nothing)."""
    name = cfg.runtime.run_name
    if result.get("resumed_from") == result.get("step"):
        return f"finished:   already, at meta-step {int(result['step'])}; nothing was trained by this command"
    if result.get("step", 0) < cfg.train.meta_steps:  # stopped early
        return f"finished:   stopped early; raise train.early_stop_patience and re-run (run name {name!r})"
    return f"continue:   raise train.meta_steps and re-run the same command (run name {name!r})"
