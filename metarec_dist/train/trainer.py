"""The meta-trainer: one ``engine.backward`` + ``engine.step`` per meta-step, whatever runs it.

It gets a ``WorkerContext`` (local process or Ray worker) and builds everything else from its own config
sections. All state that matters for an exact resume (engine shards, task-stream position, RNG, step, W&B
run id) is saved together in one checkpoint.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from metarec_dist import checkpoint as ckpt
from metarec_dist.config import Config
from metarec_dist.data.split import UserSplits
from metarec_dist.eval.cold_start import flat_means
from metarec_dist.eval.protocol import ColdStartProtocol
from metarec_dist.meta import MetaLearner, build_algorithm
from metarec_dist.metrics.flops import StepShape, flops_per_task, mfu
from metarec_dist.metrics.loggers import MetricLogger, NullLogger
from metarec_dist.metrics.redact import redact
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.runtime.context import WorkerContext
from metarec_dist.tasks.sampler import TaskSampler

log = logging.getLogger("metarec")


@dataclass
class TrainState:
    step: int = 0
    wandb_run_id: str | None = None
    resumed_from: int | None = None  # the meta-step this process resumed at, if it did
    history: list[dict[str, Any]] = field(default_factory=list)


def tokens_per_task(cfg: Config) -> int:
    return 1 + cfg.tasks.support_max + cfg.tasks.query_size


def peak_memory_gb(device: torch.device) -> float:
    """Peak accelerator memory on GPUs; peak resident memory of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


class MetaTrainer:
    def __init__(
        self,
        cfg: Config,
        ctx: WorkerContext,
        data: UserSplits,
        run_dir: Path | None = None,
        logger: MetricLogger | None = None,
    ) -> None:
        self.cfg, self.ctx, self.data, self.run_dir = cfg, ctx, data, run_dir
        self.logger = logger if logger is not None else NullLogger()
        torch.manual_seed(cfg.train.seed)
        self.model = SeqRecommender(cfg.model, data.num_items, seed=cfg.train.seed)
        self.algorithm = build_algorithm(cfg.meta, self.model.head.size)
        negatives = cfg.model.num_negatives if cfg.model.loss == "sampled" else 0
        self.sampler = TaskSampler(data.train, cfg.tasks, data.num_items, cfg.train.seed, negatives)
        self.per_rank = cfg.meta.meta_batch_size // ctx.world_size
        self.micro = self.per_rank // cfg.runtime.grad_accum
        self.engine = ctx.build_engine(
            MetaLearner(self.model, self.algorithm), cfg.optim, cfg.runtime, cfg.train.meta_steps, self.micro
        )
        self.state = TrainState()

    # ------------------------------------------------------------------------------------ one step

    def rank_share(self, step_batch: Any) -> list[Any]:
        """This rank's tasks of the global meta-batch, cut into ``grad_accum`` micro-batches."""
        lo = self.ctx.rank * self.per_rank
        return [
            step_batch.slice(lo + i * self.micro, lo + (i + 1) * self.micro)
            for i in range(self.cfg.runtime.grad_accum)
        ]

    def train_step(self, track_adaptation: bool = True) -> dict[str, float]:
        batch = self.sampler.sample(self.cfg.meta.meta_batch_size)
        sums: dict[str, float] = {}
        for micro in self.rank_share(batch):
            out = self.engine.meta_step(micro.to(self.ctx.device), track_adaptation)
            self.engine.backward(out.loss)
            self.engine.step()
            for k, v in {"loss": out.loss.detach(), **out.metrics}.items():
                sums[k] = sums.get(k, 0.0) + float(v) / self.cfg.runtime.grad_accum
        self.state.step += 1
        return sums

    # ------------------------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        self.maybe_resume()
        cfg = self.cfg
        self.engine.train()
        t0, steps0 = time.perf_counter(), self.state.step
        # Throughput counts the steps after the timing warm-up (from the start until it is over).
        warm_end = steps0 + cfg.train.timing_warmup
        last: dict[str, float] = {}
        while self.state.step < cfg.train.meta_steps:
            step = self.state.step + 1
            logging_step = step % cfg.train.log_every == 0 or step == cfg.train.meta_steps
            # The support loss after adaptation costs one more scoring pass: only on the steps we log.
            metrics = self.train_step(track_adaptation=logging_step)
            if logging_step:
                last = self.ctx.all_reduce_mean(metrics)
                elapsed = time.perf_counter() - t0
                last.update(self.throughput(step - steps0, elapsed))
                last["lr"] = float(self.engine.get_lr()[0])
                norm = self.engine.get_global_grad_norm()
                if norm is not None:
                    last["grad_norm"] = float(norm)
                if cfg.train.eval_every and step % cfg.train.eval_every == 0:
                    last.update(self.validate())
                self.logger.log(last, step)
                self.state.history.append({"step": step, **last})
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step < cfg.train.meta_steps:
                self.save_and_report({"step": step, **last})
            if step == warm_end:
                t0, steps0 = time.perf_counter(), step
        final = {"step": self.state.step, **last}
        if self.state.resumed_from is not None:
            final["resumed_from"] = self.state.resumed_from
        if self.data.valid:
            val = self.validate([k for k in self.cfg.eval.shots if k <= self.cfg.tasks.support_max])
            self.logger.log(val, self.state.step)
            final.update({k: v for k, v in val.items() if not isinstance(v, list)})
        folder = self.save_and_report(final) if self.checkpointing else None
        if not self.checkpointing:
            self.ctx.report(final)
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
        backbone = sum(
            p.numel() for n, p in self.model.backbone.named_parameters() if p.dim() == 2 and "wte" not in n
        )
        return StepShape(
            tokens=tokens_per_task(c),
            support_positions=(c.tasks.support_min + c.tasks.support_max) / 2,
            query_positions=c.tasks.query_size,
            hidden=c.model.hidden_size,
            layers=c.model.num_layers,
            num_items=self.data.num_items,
            backbone_params=backbone,
            adaptation_steps=c.meta.adaptation_steps if self.algorithm.adapts else 0,
            fast_params=self.model.head.size,
        )

    def validate(self, shots: list[int] | None = None) -> dict[str, Any]:
        """Cold-start NDCG@10 / Recall@10 on validation users (every rank: ZeRO-3 scoring is a collective).
        With several ``shots`` it also returns the per-K rows as ``eval/cold_start_table``."""
        shots = shots or [min(3, self.cfg.tasks.support_max)]
        steps = None if self.algorithm.adapts else 0
        protocol = ColdStartProtocol(self.data, shots, self.cfg.tasks.support_max, self.cfg.eval)
        self.engine.eval()
        res = protocol.per_user(
            self.engine,
            self.data.valid[: self.cfg.train.eval_users],
            steps,
            ks=(10,),
            device=self.ctx.device,
        )
        self.engine.train()
        out: dict[str, Any] = {
            f"val/{k}": v for k, v in flat_means(res).items() if k.startswith(("ndcg@10", "recall@10"))
        }
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

    # ------------------------------------------------------------------------------------ checkpoints

    def client_state(self) -> dict[str, Any]:
        return {
            "step": self.state.step,
            "sampler": self.sampler.state_dict(),
            "wandb_run_id": self.state.wandb_run_id,
            "config": redact(self.cfg.to_dict()),  # checkpoints travel: no secrets in them
            "num_items": self.data.num_items,
            "item_titles": self.data.item_titles,
        }

    @property
    def checkpointing(self) -> bool:
        return self.run_dir is not None

    def save_and_report(self, metrics: dict[str, Any]) -> Path | None:
        """Save a complete checkpoint (every rank) and report it with ``metrics``."""
        if not self.checkpointing:
            return None
        folder = self.ctx.checkpoint_folder(self.state.step)
        ckpt.save_checkpoint(
            self.engine,
            folder,
            self.client_state(),
            self.ctx.rank,
            self.ctx.world_size,
            self.ctx.barrier,
            self.ctx.all_gather,
        )
        self.ctx.report(metrics, folder)
        return folder

    def maybe_resume(self) -> None:
        if not self.cfg.checkpoint.resume:
            return
        with self.ctx.resume_dir() as folder:
            if folder is None:
                return
            state = ckpt.load_checkpoint(self.engine, folder, self.ctx.rank)
        if state["_manifest_world_size"] != self.ctx.world_size:
            raise ValueError(
                f"checkpoint {folder} was written by {state['_manifest_world_size']} workers but this run "
                f"has "
                f"{self.ctx.world_size}; ZeRO shards are tied to the data-parallel size (convert it to a "
                "universal checkpoint or resume with the same runtime.num_workers)"
            )
        self.state.step = self.state.resumed_from = int(state["step"])
        self.state.wandb_run_id = state.get("wandb_run_id")
        self.sampler.load_state_dict(state["sampler"])
        log.info("resumed from %s at meta-step %d", folder, self.state.step)
