"""``train.pretrain``: a run in two stages, one command. Stage 1 is the run of another config file (e.g. a
`sasrec` trained to convergence), trained into ``<run folder>/pretrain``; stage 2 is this run, which starts
from stage 1's final weights exactly as ``train.init_from: <run folder>/pretrain`` would.

Why a stage inside the run folder rather than a path the user writes: the two stages must agree on the data
and the seed, and a hand-made path to another run is how they come to disagree. Stage 1 therefore takes this
config's ``data``, ``eval`` (the validation that stops it early), ``runtime`` (its folder:
``<run folder>/pretrain``), ``logging``, ``train.seed`` and ``checkpoint.resume``; everything else comes from
its own file. A stage-1 file that itself has a
``pretrain`` is refused (one level only).

Safe to re-run: a finished stage 1 with the same settings is reused as it is; an interrupted one resumes
from its checkpoint (the trainer's resume); one with other settings is an error that names them, and is
never deleted or overwritten. Both runtimes use it: ``metarec train`` (``train/launch.py``) and the
reproduction (``eval/reproduce.py``) call :func:`run_pretrain` with their own way of training one run, and
for Ray that is the driver, running the two Ray jobs one after the other.

Light on purpose (no torch): the CLI checks the stage before any data is read.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metarec_dist.config import Config, from_dict, read_yaml, resolve_loss
from metarec_dist.errors import UserError

log = logging.getLogger("metarec")

PRETRAIN_DIR = "pretrain"  # stage 1's run folder, inside the run folder of stage 2
# Settings that only place a run: stage 1 of a run and a run of the same config elsewhere are the same run.
PLACE_KEYS = ("runtime.run_name", "runtime.storage_path")


def stage_dir(cfg: Config) -> Path:
    """Stage 1's run folder: ``<storage_path>/<run_name>/pretrain`` (a local or shared file system)."""
    from metarec_dist.run_folder import local_run_dir

    folder = local_run_dir(cfg.runtime)
    if folder is None:
        raise UserError(
            f"train.pretrain needs runtime.storage_path on a file system every worker reads (stage 2 loads "
            f"stage 1's weights from it), not {cfg.runtime.storage_path!r}"
        )
    return folder / PRETRAIN_DIR


def init_source(cfg: Config) -> str | None:
    """Where the run's initial weights come from: ``train.init_from`` (its seed filled in), stage 1's run
    folder with ``train.pretrain``, else nowhere (None)."""
    if cfg.train.pretrain:
        return str(stage_dir(cfg))
    return cfg.train.init_from_path


def pretrain_config(cfg: Config) -> Config | None:
    """Stage 1's config (None without ``train.pretrain``): its own file, with this config's data, eval,
    runtime (placed in ``<run folder>/pretrain``), logging, seed and ``checkpoint.resume``. A missing or
    invalid file, and a file with a ``pretrain`` of its own, are ``UserError``s naming the file."""
    if not cfg.train.pretrain:
        return None
    path = Path(cfg.train.pretrain).expanduser()
    where = f"train.pretrain {path}"
    try:
        tree = read_yaml(path)
    except ValueError as exc:
        raise UserError(f"{where}: {exc}; give the config file of the first stage") from None
    train = tree.setdefault("train", {})
    if not isinstance(train, dict):
        raise UserError(f"{where}: its train: section is not a mapping")
    if train.get("pretrain") or train.get("init_from"):
        key = "pretrain" if train.get("pretrain") else "init_from"
        raise UserError(
            f"{where}: that config has a train.{key} of its own; a first stage must train from scratch "
            "(one level of pretraining only)"
        )
    runtime = dataclasses.replace(cfg.runtime, storage_path=str(stage_dir(cfg).parent), run_name=PRETRAIN_DIR)
    train["seed"] = cfg.train.seed
    tree["checkpoint"] = {**(tree.get("checkpoint") or {}), "resume": cfg.checkpoint.resume}
    taken = {"data": cfg.data, "eval": cfg.eval, "runtime": runtime, "logging": cfg.logging}
    for name, section in taken.items():
        tree[name] = dataclasses.asdict(section)
    try:
        return from_dict(Config, tree)
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from None


def run_finished(folder: Path, cfg: Config) -> bool:
    """The run whose checkpoint is ``folder`` ran all its meta-steps, or stopped early
    (``train.early_stop_patience``)."""
    from metarec_dist.checkpoint import CLIENT_STATE, read_client_state

    if f"step_{cfg.train.meta_steps:06d}" in Path(folder).name:
        return True
    if not cfg.train.early_stop_patience or not (Path(folder) / CLIENT_STATE).is_file():
        return False
    stopper = read_client_state(folder).get("early_stop") or {}
    return int(stopper.get("bad", 0)) >= cfg.train.early_stop_patience


def settings_changes(client: dict[str, Any], cfg: Config) -> dict[str, tuple[Any, Any]]:
    """``{key: (saved, now)}``: the training settings a checkpoint's run had that ``cfg`` does not (where
    the run is and how it is run and logged left out)."""
    from metarec_dist.checkpoint import config_changes
    from metarec_dist.metrics.redact import redact

    if "num_items" in client:  # the checkpoint records model.loss resolved
        cfg = resolve_loss(cfg, int(client["num_items"]))
    changes = config_changes(client.get("config") or {}, redact(cfg.to_dict()))
    return {k: v for k, v in changes.items() if not k.startswith(PLACE_KEYS)}


def same_run(a: Config, b: Config) -> bool:
    """``a`` and ``b`` train the same model (they differ at most in where the run is and how it is logged)."""
    from metarec_dist.checkpoint import config_changes

    changes = config_changes(a.to_dict(), b.to_dict())
    return not any(not k.startswith(PLACE_KEYS) for k in changes)


def finished_run(run_dir: Path, cfg: Config) -> Path | None:
    """The final checkpoint of the run in ``run_dir`` when it finished with ``cfg``'s settings; None when
    there is no complete checkpoint or the run did not finish (it resumes). A checkpoint of other settings
    is a ``UserError`` naming them: it is never trained over."""
    from metarec_dist.checkpoint import latest_complete, read_client_state

    point = latest_complete(run_dir) if Path(run_dir).is_dir() else None
    if point is None:
        return None
    changes = settings_changes(read_client_state(point), cfg)
    if changes:
        text = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changes.items())[:8])
        raise UserError(
            f"the first stage in {run_dir} was trained with other settings ({text}); it is not overwritten: "
            "move it away to train it anew, or start this run under another name (--set runtime.run_name=NEW)"
        )
    return point if run_finished(point, cfg) else None


def check_same_model(cfg: Config, stage: Config) -> None:
    """Stage 2 starts from stage 1's weights, so the two must be one model size: another one is a
    ``UserError`` naming the settings now, not after stage 1 has trained (it was then refused as
    ``train.init_from <run folder>/pretrain``, with advice to drop a key the config does not have)."""
    from metarec_dist.train.init_from import model_differences

    changes = model_differences(stage.to_dict(), cfg.model)
    if changes:
        said = ", ".join(f"{k} is {a!r} there and {b!r} here" for k, (a, b) in changes.items())
        raise UserError(
            f"train.pretrain {cfg.train.pretrain}: the first stage is another model ({said}), and this run "
            "starts from its weights; give both the same model settings (in that file, or here with --set)"
        )


def run_pretrain(cfg: Config, train_one: Callable[[Config], Any]) -> Path | None:
    """Stage 1 of ``cfg``, if it has one: reused when finished with the same settings, else trained (or
    resumed) by ``train_one(stage_cfg)``. Returns stage 1's run folder (None without ``train.pretrain``)."""
    stage = pretrain_config(cfg)
    if stage is None:
        return None
    check_same_model(cfg, stage)
    folder = stage_dir(cfg)
    done = finished_run(folder, stage)
    if done is not None:
        log.info("train.pretrain: reusing the finished first stage %s", done)
        return folder
    log.info("train.pretrain: training the first stage (%s) in %s", cfg.train.pretrain, folder)
    train_one(stage)
    if finished_run(folder, stage) is None:  # a trainer that returned without finishing: say so now
        raise UserError(f"train.pretrain: the first stage in {folder} did not finish; run again to resume")
    return folder
