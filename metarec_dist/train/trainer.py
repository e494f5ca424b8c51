"""The meta-trainer: one ``engine.backward`` + ``engine.step`` per meta-step, whatever runs it.

It gets a ``WorkerContext`` (local process or Ray worker) and builds everything else from its own config
sections. ``fit()`` reads like torchtitan's ``train()``: the loop asks its parts whether to log, validate
and save. All state that matters for an exact resume (engine shards, task-stream position, RNG, step) is
saved together by the ``Checkpointer``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec_dist.checkpoint import (
    TRAIN_DATA,
    TRAIN_FEATURES,
    VALIDATED_ADAPTATION,
    Checkpointer,
    part_state,
)
from metarec_dist.config import Config, resolve_loss
from metarec_dist.data.digest import combine, features_digest, sequences_digest
from metarec_dist.data.split import UserSplits
from metarec_dist.errors import UserError, check_fits
from metarec_dist.eval.cold_start import PerUser, flat_means
from metarec_dist.eval.distributed import AcrossRanks
from metarec_dist.eval.item_protocol import NewItemsProtocol
from metarec_dist.eval.loo import LOO
from metarec_dist.eval.new_items import check_enough_new_items
from metarec_dist.eval.protocol import (
    ColdStartProtocol,
    EngineGrid,
    LeaveOneOutProtocol,
    adaptation_grid,
    best_per_shot,
)
from metarec_dist.meta import MetaLearner, build_algorithm
from metarec_dist.metrics.flops import StepShape, flops_per_task, matmul_params, mfu
from metarec_dist.metrics.loggers import MetricLogger, NullLogger, start_wandb, wandb_run_id
from metarec_dist.metrics.redact import redact
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.run_folder import DATA_FOLDER, recorded_data_folder
from metarec_dist.runtime.context import LocalContext, WorkerContext
from metarec_dist.tasks.sampler import ShardedTaskSampler, TaskSampler, rank_seed, shared_seed
from metarec_dist.train.early_stop import EarlyStopping, criterion_parts, validation_criterion
from metarec_dist.train.freeze import freeze
from metarec_dist.train.init_from import init_from, resumes
from metarec_dist.train.pretrain import init_source

log = logging.getLogger("metarec")
VALID_KS = (10,)  # the periodic and final validations report NDCG@10 / Recall@10


class ValidatedAdaptation:
    """The (steps, inner lr) per support size of the run's latest searched validation, with their mean
    NDCG@10, in the record an export's recorded adaptation has (``eval/stored_adaptation.py``): a part of
    every checkpoint of a run with ``train.eval_adaptation: searched``, copied into its exports. The final
    checkpoint's is the final validation's choice for the weights it holds (the best ones, with early
    stopping); recommend and serve apply it, as they apply ``train.eval_steps``."""

    def __init__(self) -> None:
        self.record: dict[str, Any] | None = None

    def choose(self, where: dict[int, tuple[int, float]], scores: dict[int, float]) -> None:
        first = where[min(where)]
        self.record = {
            "steps": first[0],
            "inner_lr": first[1],
            "per_shot": {str(k): [steps, lr] for k, (steps, lr) in sorted(where.items())},
            "val_ndcg@10": sum(scores.values()) / len(scores),
        }

    def state_dict(self) -> dict[str, Any]:
        return dict(self.record or {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.record = dict(state) if "per_shot" in state else None  # none yet, or an older checkpoint


@dataclass
class TrainState:
    """The loop's own position; ``resumed_from`` is this process's business and is not saved."""

    step: int = 0
    wandb_run_id: str | None = None
    resumed_from: int | None = None  # the meta-step this process resumed at, if it did

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "wandb_run_id": self.wandb_run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = self.resumed_from = int(state["step"])
        self.wandb_run_id = state.get("wandb_run_id")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, which ``metarec train`` turns into one) during the loop, with the meta-steps
    done so far."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted at meta-step {step}")
        self.step = step


@dataclass(frozen=True)
class Every:
    """A schedule: due every ``n`` steps (never when ``n`` is 0), and at step ``last`` when given."""

    n: int
    last: int | None = None

    def __call__(self, step: int) -> bool:
        return (self.n > 0 and step % self.n == 0) or step == self.last


class StepTimer:
    """Throughput window: counts the steps after the timing warm-up (from the start until it is over)."""

    def __init__(self, start_step: int, warmup: int) -> None:
        self.t0, self.steps0, self.warm_end = time.perf_counter(), start_step, start_step + warmup

    def elapsed(self, step: int) -> tuple[int, float]:
        return step - self.steps0, time.perf_counter() - self.t0

    def tick(self, step: int) -> None:
        if step == self.warm_end:
            self.t0, self.steps0 = time.perf_counter(), step


def finished_message(cfg: Config, step: int, stopped_early: bool) -> str:
    """Said at once when a re-run resumes a run that has nothing left to train (it is reused as it is)."""
    why = "early stopped" if stopped_early else "all train.meta_steps done"
    more = "train.early_stop_patience" if stopped_early else "train.meta_steps"
    return (
        f"run {cfg.runtime.run_name!r} already finished at meta-step {step} ({why}); nothing to train. "
        f"Raise {more} to continue, or choose another runtime.run_name"
    )


def is_finished(cfg: Config, step: int, early_stop: EarlyStopping | None) -> bool:
    """Whether a run at meta-step ``step`` trains no further step under ``cfg``: every ``train.meta_steps``
    done, or ``early_stop`` (train.early_stop_patience's tracker, None without it) says stop."""
    return step >= cfg.train.meta_steps or has_stopped_early(early_stop)


def has_stopped_early(early_stop: EarlyStopping | None) -> bool:
    return early_stop is not None and early_stop.should_stop


def finished_checkpoint_message(cfg: Config, client: dict[str, Any]) -> str | None:
    """:func:`finished_message` when resuming from the checkpoint of client state ``client`` under ``cfg``
    trains nothing (what ``MetaTrainer.fit`` says once it has loaded it), else None. Decided from the
    saved loop position and early-stop counters alone: the Ray driver asks before it starts the cluster."""
    state = TrainState()
    state.load_state_dict(part_state(client, "train_state"))
    early_stop = early_stopping(cfg)
    if early_stop is not None:
        early_stop.load_state_dict(part_state(client, "early_stop"))
    if not is_finished(cfg, state.step, early_stop):
        return None
    return finished_message(cfg, state.step, has_stopped_early(early_stop))


def early_stopping(cfg: Config, module: torch.nn.Module | None = None) -> EarlyStopping | None:
    """train.early_stop_patience's tracker of ``module`` (None when it is 0)."""
    patience = cfg.train.early_stop_patience
    return EarlyStopping(patience, module) if patience else None


def tokens_per_task(cfg: Config) -> int:
    return 1 + cfg.tasks.support_max + cfg.tasks.query_size


def peak_memory_gb(device: torch.device) -> float:
    """Peak accelerator memory on GPUs; peak resident memory of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def build_sampler(cfg: Config, ctx: WorkerContext, data: UserSplits) -> TaskSampler | ShardedTaskSampler:
    """The task stream. With several ranks, ``data.train`` is this rank's shard of the training users and the
    rank samples from it with its own seed; in one process, ``tasks.shards=N`` samples as N ranks would."""
    negatives = cfg.model.num_negatives if cfg.model.loss == "sampled" else 0
    seed, world, features = cfg.train.seed, ctx.world_size, data.user_features("train")
    if world > 1:
        return TaskSampler(
            data.train,
            cfg.tasks,
            data.num_items,
            rank_seed(seed, ctx.rank, world),
            negatives,
            features,
            rank=ctx.rank,
            world_size=world,
            negatives_seed=shared_seed(seed),
            held_out=data.new_items,
        )
    if cfg.tasks.shards > 1:
        users = data.train_users if data.train_users is not None else range(len(data.train))
        return ShardedTaskSampler(
            data.train,
            users,
            cfg.tasks.shards,
            cfg.tasks,
            data.num_items,
            seed,
            negatives,
            features,
            held_out=data.new_items,
        )
    return TaskSampler(
        data.train, cfg.tasks, data.num_items, seed, negatives, features, held_out=data.new_items
    )


def trained_items(ctx: WorkerContext, train: list[np.ndarray]) -> list[np.ndarray]:
    """The items of every rank's training users (one array): each rank holds only its shard, and the model
    must be built alike on all ranks."""
    mine = np.unique(np.concatenate(train)) if train else np.zeros(0, np.int64)
    if ctx.world_size == 1:
        return list(train)
    return [np.unique(np.concatenate(ctx.all_gather(mine)))]


def train_data_digest(ctx: WorkerContext, data: UserSplits, chunk: int = 65_536) -> str:
    """sha256 of the training users' ids and item sequences, over every rank's shard (a collective): saved
    with each checkpoint, so a resume on other data (another file, split, seed or filter, even one that
    keeps the catalogue's size) is refused. Users in id order: the order rows arrive in does not count."""
    mine = sequences_digest(data.train, data.train_users, chunk)
    return mine if ctx.world_size == 1 else combine(ctx.all_gather(mine))


def check_model_fits(cfg: Config, num_items: int) -> None:
    """A model of ``cfg``'s sizes over a ``num_items`` catalogue is under the accepted ceiling
    (``ModelConfig.check_catalogue``) and its fp32 weights alone fit in the memory available now: one under
    the ceiling but over the machine's memory (model.max_seq_len=100000000) failed building the model, with
    torch's allocator error as a traceback."""
    params = cfg.model.check_catalogue(num_items)
    keys = ("hidden_size", "num_layers", "max_seq_len")
    sizes = ", ".join(f"model.{k}={getattr(cfg.model, k)}" for k in keys)
    what = f"{sizes} with the data's {num_items:,} items (about {params:.1e} parameters)"
    check_fits(params, 4, what, "the model's weights alone need", "parameter, fp32")


def check_batch_fits(cfg: Config, world_size: int) -> None:
    """One micro-batch's hidden states at one layer (a lower bound on what a step holds) fit in the memory
    available now: meta.meta_batch_size=100000000 sampled its tasks and filled the machine's memory."""
    micro = cfg.meta.meta_batch_size // world_size // cfg.runtime.grad_accum
    tokens = tokens_per_task(cfg)
    what = (
        f"meta.meta_batch_size={cfg.meta.meta_batch_size:,} ({micro:,} tasks of {tokens} tokens per "
        f"micro-batch) with model.hidden_size={cfg.model.hidden_size}"
    )
    needs = "one layer's hidden states alone need"
    check_fits(micro * tokens * cfg.model.hidden_size, 4, what, needs, "value, fp32")


class MetaTrainer:
    def __init__(
        self,
        cfg: Config,
        ctx: WorkerContext,
        data: UserSplits,
        logger: MetricLogger | None = None,
    ) -> None:
        cfg = resolve_loss(cfg, data.num_items)  # model.loss: auto -> full or sampled for this catalogue
        check_model_fits(cfg, data.num_items)  # too large: one line, not an allocator error
        check_batch_fits(cfg, ctx.world_size)
        self.cfg, self.ctx, self.data = cfg, ctx, data
        self.logger = logger if logger is not None else NullLogger()
        torch.manual_seed(cfg.train.seed)
        self.model = SeqRecommender.for_data(
            cfg.model, data.num_items, data.features, trained_items(ctx, data.train), seed=cfg.train.seed
        )
        self.started_from = self._load_start_weights()  # train.init_from, for the final summary
        if cfg.train.freeze:  # before the engine: the optimizer then never sees the frozen parameters
            freeze(self.model, cfg.train.freeze)
        self.algorithm = build_algorithm(cfg.meta, self.model)
        self.sampler = build_sampler(cfg, ctx, data)
        self.per_rank = cfg.meta.meta_batch_size // ctx.world_size
        self.micro = self.per_rank // cfg.runtime.grad_accum
        self.engine = ctx.build_engine(
            MetaLearner(self.model, self.algorithm), cfg.optim, cfg.runtime, cfg.train.meta_steps, self.micro
        )
        self.state = TrainState(wandb_run_id=wandb_run_id(self.logger))  # saved with every checkpoint
        self.should_log = Every(cfg.train.log_every, last=cfg.train.meta_steps)
        self.should_validate = Every(cfg.train.eval_every)
        self.early_stop = self._build_early_stop()
        self.validated = ValidatedAdaptation()
        self.checkpointer = self._build_checkpointer()
        self.resume_checked = False  # resume() has run

    def _load_start_weights(self) -> str | None:
        """Loads a finished run's weights (train.init_from, or the first stage of train.pretrain) into the
        new model, unless this run resumes from its own checkpoint (which it then loads instead); says what
        it loaded."""
        source = init_source(self.cfg)
        run_dir = getattr(self.ctx, "run_dir", None) if self.ctx.has_checkpoint_storage else None
        if source and resumes(run_dir, self.cfg.checkpoint.resume):
            log.info("train.init_from %s not read: the run resumes from its own checkpoint", source)
            return None
        if not source:
            return None
        random_split = self.cfg.data.split == "random"
        said: list[str] = []
        init_from(source, self.model, self.cfg.model.adapters, self.data.item_raw_ids, random_split, said)
        return f"{source} ({'; '.join(said) or 'the same items'})"

    def _build_early_stop(self) -> EarlyStopping | None:
        """train.early_stop_patience's tracker (None when it is 0); it keeps the best validated weights."""
        patience = self.cfg.train.early_stop_patience
        if patience and not self.data.valid:
            raise UserError(
                "train.early_stop_patience needs validation users and the data has none: set "
                "data.valid_frac > 0, or train.early_stop_patience: 0"
            )
        return early_stopping(self.cfg, self.engine.module)

    def _build_checkpointer(self) -> Checkpointer:
        """Saves the engine with the loop's position, the early stop and the task stream: one stream for a
        single process, one per rank (rank parts) with several."""
        parts: dict[str, Any] = {"train_state": self.state}
        if self.ctx.world_size == 1:
            parts["sampler"] = self.sampler
        if self.early_stop is not None:  # the same on every rank: the validation is all-gathered
            parts["early_stop"] = self.early_stop
        if self.validation_points is not None:
            parts[VALIDATED_ADAPTATION] = self.validated
        return Checkpointer(
            self.ctx,
            self.cfg.checkpoint,
            self.engine,
            parts,
            self.checkpoint_info(),
            self.cfg,
            rank_parts={"sampler": self.sampler} if self.ctx.world_size > 1 else None,
        )

    # ------------------------------------------------------------------------------------ one step

    def micro_batches(self, rank_batch: Any) -> list[Any]:
        """This rank's share of the meta-batch, cut into ``grad_accum`` micro-batches."""
        return [
            rank_batch.slice(i * self.micro, (i + 1) * self.micro) for i in range(self.cfg.runtime.grad_accum)
        ]

    def train_step(self, track_adaptation: bool = True) -> dict[str, float]:
        # Every rank samples the same number of tasks from its own shard (uneven shards cannot hang).
        batch = self.sampler.sample(self.per_rank)
        sums: dict[str, float] = {}
        for micro in self.micro_batches(batch):
            out = self.engine.meta_step(micro.to(self.ctx.device), track_adaptation)
            self.engine.backward(out.loss)
            self.engine.step()
            for k, v in {"loss": out.loss.detach(), **out.metrics}.items():
                sums[k] = sums.get(k, 0.0) + float(v) / self.cfg.runtime.grad_accum
        self.state.step += 1
        return sums

    # ------------------------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        if self.cfg.data.protocol == "new_items" and self.data.valid:  # now, not in the validation after
            new_items = self.data.new_items  # training (which would end the run before its final save)
            check_enough_new_items(0 if new_items is None else len(new_items), self.data.num_items, VALID_KS)
        self.resume()
        if self.state.resumed_from is not None and self.finished:
            log.warning("%s", finished_message(self.cfg, self.state.step, self.stopped_early))
        else:  # W&B (deferred by train_local and the Ray workers) starts only for a run that trains
            start_wandb(self.logger)
            self.keep_wandb_run_id()
        self.engine.train()
        try:
            last = self.train_loop()
        except KeyboardInterrupt as exc:  # Ctrl-C / SIGTERM: the CLI says where a re-run starts
            raise TrainingInterrupted(self.state.step) from exc
        return self.finish(last)

    def resume(self) -> Path | None:
        """Resume from the run's checkpoint, if it has one, refusing another model or data; once (``fit``
        calls it, and ``train_local`` before its progress bar is drawn). The checkpoint resumed from."""
        if not self.resume_checked:
            self.checkpointer.load()
            self.resume_checked = True
        return None if self.checkpointer.loaded is None else self.checkpointer.loaded[1]

    def keep_wandb_run_id(self) -> None:
        """After a resume: the checkpoints go on naming the W&B run this process logs to (None with W&B
        off). The id comes from the run name and storage path, so a resume finds the same W&B run; a run
        folder moved elsewhere gets another one, which is said."""
        current = wandb_run_id(self.logger)
        saved = self.state.wandb_run_id
        if self.state.resumed_from is not None and saved and current and saved != current:
            log.warning(
                "the resumed checkpoint was logged to W&B run %s; this run logs to a new W&B run %s "
                "(the W&B run id follows runtime.run_name and runtime.storage_path)",
                saved,
                current,
            )
        self.state.wandb_run_id = current

    def train_loop(self) -> dict[str, Any]:
        """Meta-steps until ``train.meta_steps`` or an early stop; the last logged metrics."""
        timer = StepTimer(self.state.step, self.cfg.train.timing_warmup)
        last: dict[str, Any] = {}
        # A resumed run that had already stopped early trains no further step (its weights are the best).
        while self.state.step < self.cfg.train.meta_steps and not self.stopped_early:
            step = self.state.step + 1
            logging_step = self.should_log(step)
            # The support loss after adaptation costs one more scoring pass: only on the steps we log.
            metrics = self.train_step(track_adaptation=logging_step)
            if logging_step:
                last = self.step_metrics(metrics, *timer.elapsed(step))
                if self.should_validate(step):
                    last.update(self.validate())
                    if self.early_stop is not None:
                        self.early_stop.update(step, validation_criterion(last), criterion_parts(last))
                self.logger.log(last, step)
            # A run that stops early here saves its final checkpoint (best weights) at this step in finish().
            if self.checkpointer.should_save(step) and not self.stopped_early:
                self.checkpointer.save(step, {"step": step, **last})
            timer.tick(step)
            if self.stopped_early:
                log.info("early stopping at meta-step %d (best: step %d)", step, self.early_stop.best_step)
        return last

    @property
    def finished(self) -> bool:
        return is_finished(self.cfg, self.state.step, self.early_stop)

    @property
    def stopped_early(self) -> bool:
        return has_stopped_early(self.early_stop)

    def step_metrics(self, metrics: dict[str, float], steps: int, elapsed: float) -> dict[str, Any]:
        """The logged line of a step: metrics averaged over ranks, throughput, lr, gradient norm."""
        out: dict[str, Any] = self.ctx.all_reduce_mean(metrics)
        out.update(self.throughput(steps, elapsed))
        out["lr"] = float(self.engine.get_lr()[0])
        norm = self.engine.get_global_grad_norm()
        if norm is not None:
            out["grad_norm"] = float(norm)
        return out

    def finish(self, last: dict[str, Any]) -> dict[str, Any]:
        """Final validation over every shot count, then the final checkpoint (or just the report)."""
        final: dict[str, Any] = {"step": self.state.step, **last}
        if self.early_stop is not None:  # validate, save and export the best validated weights
            final.update(self.early_stop.restore_best(self.state.step))
        if self.state.resumed_from is not None:
            final["resumed_from"] = self.state.resumed_from
        elif self.started_from is not None:
            final["init_from"] = self.started_from
        if self.data.valid:
            val = self.validate([k for k in self.cfg.eval.shots if k <= self.cfg.tasks.support_max])
            self.logger.log(val, self.state.step)
            final.update({k: v for k, v in val.items() if not isinstance(v, list)})
        folder = self.checkpointer.save(self.state.step, final)
        return {**final, "checkpoint": str(folder) if folder else None}

    def throughput(self, steps: int, elapsed: float) -> dict[str, float]:
        tasks = steps * self.cfg.meta.meta_batch_size
        elapsed = max(elapsed, 1e-9)
        out = {
            "tasks_per_s": tasks / elapsed,
            "tokens_per_s": tasks * tokens_per_task(self.cfg) / elapsed,
            "peak_memory_gb": peak_memory_gb(self.ctx.device),
        }
        if self.cfg.runtime.use_gpu:
            out["mfu"] = mfu(flops_per_task(self.step_shape()) * tasks / elapsed)
        return out

    def step_shape(self) -> StepShape:
        c = self.cfg
        return StepShape(
            tokens=tokens_per_task(c),
            support_positions=(c.tasks.support_min + c.tasks.support_max) / 2,
            query_positions=c.tasks.query_size,
            hidden=c.model.hidden_size,
            layers=c.model.num_layers,
            num_items=self.data.num_items,
            backbone_params=matmul_params(self.model.backbone),
            adaptation_steps=c.meta.adaptation_steps if self.algorithm.adapts else 0,
            fast_params=self.model.head.size,
        )

    def valid_user_features(self) -> np.ndarray | None:
        """Feature ids of the validation users the periodic validation reads (None without features)."""
        feats = self.data.user_features("valid")
        return None if feats is None else feats[: self.cfg.train.eval_users]

    @property
    def validation_steps(self) -> int | None:
        """The periodic validation's inner steps: ``train.eval_steps`` (None: the algorithm's trained steps);
        0 for an algorithm that does not adapt."""
        return self.cfg.train.eval_steps if self.algorithm.adapts else 0

    @property
    def validation_points(self) -> list[tuple[int, float]] | None:
        """The (steps, inner lr) grid a searched validation picks from per support size (the grid `metarec
        evaluate` searches around the trained meta: settings); None: one setting, ``validation_steps``."""
        meta = self.cfg.meta
        if self.cfg.train.eval_adaptation != "searched" or not self.algorithm.adapts:
            return None
        return adaptation_grid(meta.adaptation_steps, meta.inner_lr, finetune=False)

    def validation_protocol(self, shots: list[int]) -> Any:
        """The protocol the periodic and final validations score: the configured one (cold start, new items,
        or leave-one-out with the history masked)."""
        if self.cfg.data.protocol == "loo":
            max_len = self.cfg.model.max_seq_len - self.cfg.model.prefix_tokens(self.cfg.data)
            return LeaveOneOutProtocol.build(self.data, max_len, self.cfg.eval)
        if self.cfg.data.protocol == "new_items":  # rank the held-out items, as `metarec evaluate` does
            return NewItemsProtocol.build(self.data, shots, self.cfg.tasks.support_max, self.cfg.eval)
        return ColdStartProtocol(self.data, shots, self.cfg.tasks.support_max, self.cfg.eval)

    def validate(self, shots: list[int] | None = None) -> dict[str, Any]:
        """NDCG@10 / Recall@10 on validation users (cold start; leave-one-out: NDCG@10 / HR@10 of each
        user's second-last item), each rank scoring its share of the batches (every rank the same number:
        ZeRO-3 scoring is a collective) and all of them getting every result; the algorithm's own test-time
        adaptation. With several cold-start ``shots`` it also returns the per-K rows as
        ``eval/cold_start_table``."""
        shots = shots or self.cfg.train.eval_shots or [min(3, self.cfg.tasks.support_max)]
        protocol = self.validation_protocol(shots)
        users = self.data.valid[: self.cfg.train.eval_users]
        options: dict[str, Any] = {
            "ks": VALID_KS,
            "device": self.ctx.device,
            "user_features": self.valid_user_features(),
            "runner": AcrossRanks(self.ctx),
        }
        self.engine.eval()
        if self.validation_points is None:
            res, searched = protocol.per_user(self.engine, users, self.validation_steps, **options), {}
        else:
            res, searched = self.searched_validation(protocol, users, options)
        self.engine.train()
        if self.cfg.data.protocol == "loo":
            loo = res[LOO]
            out = {f"val/loo_{m}": float(loo[m].mean()) for m in ("ndcg@10", "hr@10") if len(loo[m])}
            return {**out, **searched}
        out: dict[str, Any] = {
            f"val/{k}": v for k, v in flat_means(res).items() if k.startswith(("ndcg@10", "recall@10"))
        }
        out.update(searched)
        if len(shots) > 1:
            out["eval/cold_start_table"] = [
                {
                    "shots": k,
                    "users": len(r["ndcg@10"]),
                    **{m: float(r[m].mean()) for m in ("ndcg@10", "recall@10")},
                }
                for k, r in res.items()
            ]
        return out

    def searched_validation(
        self, protocol: Any, users: list[np.ndarray], options: dict[str, Any]
    ) -> tuple[PerUser, dict[str, float]]:
        """``train.eval_adaptation: searched``: every point of ``validation_points`` scored in one pass per
        batch through the engine, and for each support size the results at its best point (what `metarec
        evaluate` would choose on these users with ``eval.adaptation: per_shot``). Also logged: the chosen
        steps and inner lr per support size, and NDCG@10 at the trained adaptation (one of the points)."""
        points = self.validation_points or []
        results = protocol.per_setting(EngineGrid(self.engine, points), users, **options)
        if results is None:
            raise UserError(
                f"train.eval_adaptation: searched cannot score data.protocol {self.cfg.data.protocol!r} in "
                "one pass: set train.eval_adaptation: trained"
            )
        chosen, where = best_per_shot(points, results)
        self.validated.choose(where, {k: float(res["ndcg@10"].mean()) for k, res in chosen.items()})
        trained = dict(zip(points, results, strict=True)).get(
            (self.cfg.meta.adaptation_steps, self.cfg.meta.inner_lr)
        )
        extra: dict[str, float] = {}
        for k, (steps, lr) in where.items():
            extra[self.val_name("adapt_steps", k)], extra[self.val_name("adapt_lr", k)] = float(steps), lr
            if trained is not None:
                extra[self.val_name("trained_ndcg@10", k)] = float(trained[k]["ndcg@10"].mean())
        return chosen, extra

    def val_name(self, metric: str, k: int) -> str:
        """A validation metric's logged name for support size ``k`` (leave-one-out: its only result)."""
        return f"val/loo_{metric}" if self.cfg.data.protocol == "loo" else f"val/{metric}@k{k}"

    # ------------------------------------------------------------------------------------ checkpoints

    def checkpoint_info(self) -> dict[str, Any]:
        """The run's fixed facts, saved with every checkpoint (export and evaluation read them)."""
        return {
            "config": redact(self.cfg.to_dict()),  # checkpoints travel: no secrets in them
            "num_items": self.data.num_items,
            "item_titles": self.data.item_titles,
            "item_raw_ids": self.data.item_raw_ids,  # `metarec recommend` maps raw ids without the data
            TRAIN_DATA: train_data_digest(self.ctx, self.data),  # a resume checks it trains on the same data
            # The side tables (data.user_features / item_features files): every rank holds them whole.
            TRAIN_FEATURES: features_digest(self.data.features),
            # The side information the model reads (vocabularies, shapes): exports rebuild the model from it.
            "features": None if self.model.layout is None else self.model.layout.to_dict(),
            # Where relative data files were read from: in the checkpoint itself, so that a copy of it (or
            # of its export) made elsewhere, or one in cloud storage, still finds and checks its data.
            DATA_FOLDER: data_folder(self.ctx),
        }


def data_folder(ctx: WorkerContext) -> str | None:
    """The folder the run's relative data files were read from: this process's current folder when it read
    them itself (``LocalContext``), else the driver's (``ctx``'s ``data_folder``, a Ray run), else the one the
    run folder records (``run_folder.RUN_INFO``, written by the Ray driver); None where none says."""
    if isinstance(ctx, LocalContext):
        return str(Path.cwd())
    if ctx.data_folder:
        return ctx.data_folder
    folder = recorded_data_folder(ctx.run_dir) if ctx.run_dir is not None else None
    return None if folder is None else str(folder)
