"""Inside a Ray Train worker: the ``RayContext`` and the per-worker training loop.

Ray Train has already set up the torch process group (gloo on CPU, NCCL on GPUs, timeout from
``TorchConfig``) and pinned the device, so DeepSpeed finds it initialised. deepspeed is imported here,
inside the worker, never on the driver.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec_dist.config import Config
from metarec_dist.runtime.context import WorkerContext

log = logging.getLogger("metarec")

# The key under which rank 0 reports the W&B run it logs to, with every report: the driver's summary reads
# it from Ray's result where it cannot read the run folder's record (cloud storage, ``wandb_used``).
WANDB_METRIC = "wandb"
# The key of a warning rank 0 sends the driver through the progress actor (``DriverNotes``).
NOTE_KEY = "metarec/note"


class DriverNotes(logging.Handler):
    """Rank 0's ``metarec`` warnings, sent to the driver's progress actor, which prints them
    (``ray_launcher.WithWorkerNotes``): without ``--verbose`` Ray shows nothing a worker writes, and the
    settings a resume changed, judged here once the data is compared, went unsaid."""

    def __init__(self, actor: Any) -> None:
        super().__init__(logging.WARNING)
        self.actor = actor

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.actor.update.remote(
                -1, {NOTE_KEY: {"level": record.levelno, "message": record.getMessage()}}
            )
        except Exception:  # the driver is gone: nothing to tell
            self.handleError(record)


class RayContext(WorkerContext):
    """A Ray Train worker. Checkpoints are staged per rank and merged by Ray into
    ``<run_dir>/checkpoint_step_NNNNNN``; ``run_dir`` is None when the storage is a cloud URI.
    ``resume_from``: the checkpoint the driver found in the run folder before the start, if any.

    Ray Train deletes the checkpoints it registered beyond ``num_to_keep`` (= ``checkpoint.keep``), and
    fails on one deleted under it; it never deletes those it does not know (the last ones of a killed
    driver). Rank 0 prunes those after each save: beyond the newest ``keep``, never one Ray may track (its
    snapshot's, now or at this worker's start, or reported by this worker) nor ``resume_from``."""

    # Always DeepSpeed: it does the data-parallel gradient reduction across the Ray workers.
    always_deepspeed = True

    def __init__(
        self,
        run_dir: Path | None = None,
        resume_from: Path | None = None,
        keep: int = 2,
        resume_say: str = "data",
    ) -> None:
        import ray.train
        import ray.train.torch

        from metarec_dist.checkpoint import ray_tracked_checkpoints

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.run_dir, self.resume_from, self.keep = run_dir, resume_from, keep
        self._staging: list[Path] = []
        self._reported: set[Path] = set()  # checkpoints this worker handed to Ray: Ray's to delete
        tracked = ray_tracked_checkpoints(run_dir) if run_dir is not None and self.is_main else None
        self._tracked_at_start = tracked  # None: unknown, so this worker prunes nothing
        # The driver checked the resume against the checkpoint and said the changed settings, all but the
        # data's (it reads no training rows: the workers compare the data). Rank 0 says those once the data
        # is found the same (or refuses); the other ranks say nothing (checkpoint.check_resume_config). When
        # a data setting changed the driver says nothing (``resume_say="all"``): rank 0 refuses, or says all.
        self.resume_changes_to_say = resume_say if self.rank == 0 else "none"
        self.logger: Any = None  # rank 0's logger: its W&B run (wandb_record), once started, is reported

    @property
    def has_checkpoint_storage(self) -> bool:
        return True

    def saved_checkpoint_path(self, step: int) -> Path | None:
        from metarec_dist.checkpoint import ray_checkpoint_name

        return None if self.run_dir is None else self.run_dir / ray_checkpoint_name(step)

    def checkpoint_folder(self, step: int) -> Path:
        # Each rank stages its own files locally; ray.train.report merges every rank's folder into one
        # checkpoint directory in the run's storage (local disk, shared file system or cloud).
        folder = Path(tempfile.mkdtemp(prefix=f"metarec-ckpt-{step:06d}-r{self.rank}-"))
        self._staging.append(folder)
        return folder

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        import ray.train

        from metarec_dist.checkpoint import private_files, ray_checkpoint_name

        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        name = ray_checkpoint_name(int(metrics["step"])) if checkpoint_dir else None
        metrics = with_wandb_record(_plain(metrics), wandb_record(self.logger))
        with private_files():  # Ray's copy into the run's storage: 0600 files, as a local run's
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        for folder in self._staging:
            shutil.rmtree(folder, ignore_errors=True)
        self._staging.clear()
        if name is not None and self.run_dir is not None:
            self._reported.add(self.run_dir / name)
            self.prune_checkpoints()

    def prune_checkpoints(self, resumed: Path | None = None) -> None:
        """Rank 0: the run folder's checkpoints Ray does not track, beyond ``checkpoint.keep``."""
        from metarec_dist.checkpoint import prune, ray_tracked_checkpoints

        if not self.is_main or self.run_dir is None or self._tracked_at_start is None:
            return
        tracked_now = ray_tracked_checkpoints(self.run_dir)
        if tracked_now is None:
            return
        mine = [p for p in (self.resume_from, resumed) if p is not None]
        prune(self.run_dir, self.keep, [*self._tracked_at_start, *tracked_now, *self._reported, *mine])

    @contextlib.contextmanager
    def resume_dir(self, resume: bool = True) -> Iterator[Path | None]:
        """Ray Train's latest registered checkpoint (it knows which ones every rank finished): this run's own
        after a failover, resumed whatever ``resume`` says, or a previous run's (the driver has refused
        ``resume=false`` over existing checkpoints). The checkpoint the driver found instead when Ray's has
        no manifest, or is older: Ray restores a previous run's record of its checkpoints
        (``checkpoint_manager_snapshot.json``), which lags behind the run folder when that run was killed
        (its last reports never registered); resuming from it would redo those steps and move their
        complete checkpoints aside. So checkpoints Ray has lost track of are never trained over: after a
        failover too, where Ray's record lags behind the checkpoints this run saved (``found_checkpoint``)."""
        import ray.train

        from metarec_dist.checkpoint import MANIFEST

        found = self.found_checkpoint()
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield found
            return
        with checkpoint.as_directory() as folder:
            stale = _older(checkpoint.path, found)
            if ((Path(folder) / MANIFEST).is_file() and not stale) or found is None:
                yield Path(folder)  # without a manifest, loading it names what is missing
                return
        why = "is older than the run folder's newest complete one" if stale else f"has no {MANIFEST}"
        log.warning("Ray's latest checkpoint %s %s; resuming from %s", checkpoint.path, why, found)
        yield found

    def found_checkpoint(self) -> Path | None:
        """The checkpoint the driver found, or a newer one of the run folder that every rank finished.

        After a failover Ray restarts the workers from the latest checkpoint its controller registered,
        which lags behind the saves: a worker killed at step 105 of a run saving every 20 steps restarted at
        60 (measured), with 80 and 100 whole in the run folder, moved aside and trained again (and never
        pruned, being complete). A checkpoint counts when its manifest (written once every rank has saved)
        lists files that are all there at their size: a rank's upload cut short by the failure is not."""
        from metarec_dist.checkpoint import list_checkpoints

        if self.run_dir is None:
            return self.resume_from
        whole = next((p for p in reversed(list_checkpoints(self.run_dir)) if _whole(p)), None)
        if whole is None or (self.resume_from is not None and not _older(str(self.resume_from), whole)):
            return self.resume_from
        return whole


def _whole(folder: Path) -> bool:
    """Whether every file ``folder``'s manifest lists is there at its size (no sha256: read at loading)."""
    from metarec_dist.checkpoint import read_manifest
    from metarec_dist.errors import UserError

    try:
        files = read_manifest(folder)["files"]
    except UserError:
        return False
    return all(
        (folder / rel).is_file() and (folder / rel).stat().st_size == m["size"] for rel, m in files.items()
    )


def _older(ray_path: str, found: Path | None) -> bool:
    """Whether the checkpoint at ``ray_path`` (Ray's) has an older step than ``found``."""
    from metarec_dist.checkpoint import checkpoint_step

    if found is None:
        return False
    ray_step, found_step = checkpoint_step(Path(ray_path).name), checkpoint_step(found.name)
    return ray_step is not None and found_step is not None and ray_step < found_step


def _plain(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (float(v) if isinstance(v, (int, float, np.floating, torch.Tensor)) else v)
        for k, v in metrics.items()
    }


def with_wandb_record(metrics: dict[str, Any], record: dict[str, Any] | None) -> dict[str, Any]:
    """``metrics`` as reported to Ray: with rank 0's W&B record (entity, project, id, mode, ...) under
    ``WANDB_METRIC``. The driver's summary names the run from it: with ``s3://`` storage it cannot read the
    run folder's ``.wandb-run.json``, and its own environment may not be worker 0's."""
    return metrics if record is None else {**metrics, WANDB_METRIC: dict(record)}


def wandb_record(logger: Any) -> dict[str, Any] | None:
    """The record of the W&B run ``logger`` (a ``MultiLogger`` on rank 0) logs to; None without W&B."""
    for part in getattr(logger, "loggers", (logger,)):
        record = getattr(part, "record", None)
        if isinstance(record, dict):
            return record
    return None


def train_loop_per_worker(config: dict[str, Any]) -> None:
    from metarec_dist.config import from_dict
    from metarec_dist.run_folder import local_run_dir
    from metarec_dist.runtime.allocator import apply_process_settings

    cfg: Config = from_dict(Config, config["cfg"])
    logging.basicConfig(level=logging.INFO if cfg.logging.verbose else logging.WARNING)
    apply_process_settings(cfg.runtime)
    run_dir = local_run_dir(cfg.runtime)  # the driver made the storage path absolute
    resume_from = Path(config["resume_from"]) if config.get("resume_from") else None
    ctx = RayContext(run_dir, resume_from, cfg.checkpoint.keep, config.get("resume_say", "data"))
    ctx.data_folder = config.get("data_folder")  # the driver's, recorded in every checkpoint
    with notes_to_driver(config["progress"] if ctx.is_main and config.get("notes") else None):
        _fit(cfg, ctx, config)


@contextlib.contextmanager
def notes_to_driver(actor: Any) -> Iterator[None]:
    """Rank 0's ``metarec`` warnings go to the driver's progress ``actor`` too (None: nowhere else)."""
    if actor is None:
        yield
        return
    handler, logger = DriverNotes(actor), logging.getLogger("metarec")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _fit(cfg: Config, ctx: RayContext, config: dict[str, Any]) -> None:
    """Rank ``ctx.rank``'s part of the run: its data, its logger, the trainer."""
    from metarec_dist.data.split import UserSplits
    from metarec_dist.metrics.loggers import build_logger
    from metarec_dist.run_folder import storage_root
    from metarec_dist.runtime.progress import ActorProgressLogger
    from metarec_dist.runtime.ray_data import rank_data_footprint, read_first_users, read_shard, train_name
    from metarec_dist.train.trainer import MetaTrainer

    # This rank's shard of the training users only; the validation users it evaluates (the first
    # train.eval_users by id, as a single process takes them).
    train = read_shard(train_name(ctx.rank))
    valid = read_first_users("valid", cfg.train.eval_users)
    log.info("rank %d: %s", ctx.rank, rank_data_footprint({"train": train, "valid": valid}))
    data = UserSplits(
        train=train.sequences,
        valid=valid.sequences,
        test=[],
        train_users=train.users,
        **config["catalogue"],
    )
    if data.features is not None:  # the user-feature rows of the users this rank holds
        data.features = data.features.with_split_users({"train": train.users, "valid": valid.users})
    logger = build_logger(
        cfg.logging,
        cfg.runtime.run_name,
        storage_root(cfg.runtime),
        config["cfg"],
        ctx.is_main,
        directory=ctx.run_dir,  # W&B files inside the run folder when it is local
        extra=(ActorProgressLogger(config["progress"]),) if config.get("progress") is not None else (),
        defer_wandb=True,  # started by MetaTrainer.fit, after the resume checks
    )
    ctx.logger = logger
    trainer = MetaTrainer(cfg, ctx, data, logger=logger)
    try:
        trainer.fit()
    finally:
        logger.close()
