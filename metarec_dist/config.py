"""Typed configuration: dataclass sections, YAML files, ``--set a.b=value`` overrides.

Every section is a dataclass; the loader walks the type hints, so a new field needs no parser code.
Unknown keys, wrong types and impossible combinations are ``ValueError``s that name the key, because
a typo in a 6-hour cluster job should fail in the first second, not be silently ignored.
Each builder receives only its own section (``build_model(cfg.model, ...)``), never the whole tree.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import stat
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from metarec_dist.data.config import DataConfig, check_seed
from metarec_dist.errors import UserError


class ConfigError(UserError):
    """A mistake in the value of ``keys`` (dotted names), so that ``blame`` can tell who set them."""

    def __init__(self, message: str, *keys: str) -> None:
        super().__init__(message)
        self.keys = keys


# A backbone this large is a typo (an extra 000), not a run: 100x configs/xl-1b.yaml, 400 GB of fp32 weights.
MAX_BACKBONE_PARAMS = 10**11

# The fast-weight adapters models/adapters.py builds (kept in sync by a test; config.py imports no torch).
ADAPTER_NAMES = ("lowrank", "film", "bias", "itemlr")


@dataclass
class ModelConfig:
    arch: Literal["llama", "gpt2"] = "gpt2"
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int | None = None  # None: 4 x hidden_size
    max_seq_len: int = 64
    dropout: float = 0.0
    pretrained_path: str | None = None  # a `save_pretrained` folder for the backbone
    # Fast weights: which head adapters are adapted per task in the inner loop.
    adapters: list[str] = field(default_factory=lambda: ["lowrank"])
    adapter_rank: int = 8
    # Next-item loss: "full" softmax over every item, "sampled" softmax over the target and num_negatives
    # items shared by the meta-batch, or "auto": full up to sampled_above items, sampled above (a full
    # softmax holds [positions x items] logits: 4 GB per 1,000 positions at 1M items).
    loss: Literal["auto", "full", "sampled"] = "auto"
    num_negatives: int = 256  # sampled softmax only
    sampled_above: int = 100_000  # loss: auto
    init_std: float = 0.02
    # Side information (used only when the data declares features; see models/features.py).
    # Item representation = id embedding + content embedding of the item's features ("sum"), or a learned
    # per-dimension gate between the two ("gated"); "off": ids only, the features are ignored.
    item_content: Literal["sum", "gated", "off"] = "sum"
    user_prefix: bool = True  # the user's features as one token before BOS (when users have features)
    title_buckets: int = 4096  # titles: hashed bag of words, this many hash buckets
    text_encoder: str | None = None  # titles through a frozen `transformers` encoder from this local folder
    # Training only: the probability that an item is represented by its content alone in a meta-step (its id
    # row dropped everywhere), so content-only items (new ones) look like what the model was trained on.
    item_id_dropout: float = 0.0
    # Training only: whether items without a training interaction are candidates of the training softmax.
    # "include": every catalogue item is a negative of every step (the cold-start recipe); "exclude": they
    # are not, so nothing about them is learned (data.protocol new_items: the held-out items are held out
    # of the loss too, not only of the batches); "auto": exclude under data.protocol new_items, else include.
    unseen_items: Literal["auto", "include", "exclude"] = "auto"

    def __post_init__(self) -> None:
        _positive(
            self,
            "model",
            "hidden_size",
            "num_layers",
            "num_heads",
            "max_seq_len",
            "adapter_rank",
            "title_buckets",
            "sampled_above",
            "num_negatives",
        )
        if self.intermediate_size is not None and self.intermediate_size < 1:
            raise ValueError(
                f"model.intermediate_size must be >= 1 (or null: 4 x hidden_size), "
                f"got {self.intermediate_size}"
            )
        if not self.init_std > 0:  # also catches NaN; torch's normal_ rejects a negative std mid-build
            raise ValueError(f"model.init_std must be a number > 0, got {self.init_std}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by "
                f"model.num_heads ({self.num_heads})"
            )
        self._check_size()
        if not self.adapters:
            raise ValueError("model.adapters: list at least one fast-weight adapter, e.g. [lowrank]")
        unknown = [a for a in self.adapters if a not in ADAPTER_NAMES]
        if unknown:
            raise ValueError(f"model.adapters: unknown {unknown}; choose from {list(ADAPTER_NAMES)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("model.dropout must be in [0, 1)")
        if not 0.0 <= self.item_id_dropout < 1.0:
            raise ValueError("model.item_id_dropout must be in [0, 1)")

    @property
    def ffn_size(self) -> int:
        """The MLP width: ``intermediate_size``, or 4 x hidden_size when left null (checkpoint.py's
        ``resolved_config`` applies the same rule to saved configs)."""
        return self.intermediate_size or 4 * self.hidden_size

    def backbone_params(self) -> int:
        """About how many parameters the transformer layers and position table hold (attention 4 h^2, MLP
        up to 3 h x intermediate as in Llama). The item table (num_items x hidden_size), which dominates at
        large catalogues, depends on the data and is not counted: ``check_catalogue`` adds it once the data
        is read."""
        h = self.hidden_size
        return self.num_layers * (4 * h * h + 3 * h * self.ffn_size) + self.max_seq_len * h

    def item_table_params(self, num_items: int) -> int:
        """The item embedding table's parameters: a row of hidden_size per item, plus padding and BOS."""
        return (num_items + 2) * self.hidden_size

    def _sizes(self) -> str:
        return ", ".join(
            f"model.{k}={getattr(self, k)}"
            for k in ("hidden_size", "num_layers", "intermediate_size", "max_seq_len")
            if getattr(self, k) is not None
        )

    def _check_size(self) -> None:
        """Refuse sizes no run can allocate now, not after the data is read, in a long allocator error."""
        n = self.backbone_params()
        if n <= MAX_BACKBONE_PARAMS:
            return
        per_million = self.item_table_params(10**6 - 2)
        raise ValueError(
            f"{self._sizes()}: a backbone of about {n:.1e} parameters ({n * 4 / 1e12:.2g} TB in fp32), over "
            f"the {MAX_BACKBONE_PARAMS:.0e} accepted (100x configs/xl-1b.yaml), before the item table "
            f"(another {per_million:.1e} per million items); check these sizes for a typo"
        )

    def check_catalogue(self, num_items: int) -> int:
        """The model's approximate size with the item table of a ``num_items`` catalogue (returned);
        ``ValueError`` naming hidden_size and the catalogue when the table takes it over the ceiling, which
        the config-time check cannot see. For the point where the data is read, before the model is built."""
        table = self.item_table_params(num_items)
        n = self.backbone_params() + table
        if n > MAX_BACKBONE_PARAMS:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} with the data's {num_items:,} items: an item table of "
                f"about {table:.1e} parameters ({table * 4 / 1e12:.2g} TB in fp32) and a model of {n:.1e}, "
                f"over the {MAX_BACKBONE_PARAMS:.0e} accepted; lower model.hidden_size or use a smaller "
                "catalogue"
            )
        return n

    def prefix_tokens(self, data: DataConfig) -> int:
        """Positions before BOS: one for the user's features when there are any and they are used."""
        return int(self.user_prefix and bool(data.user_features))


@dataclass
class TasksConfig:
    support_min: int = 1
    support_max: int = 10
    query_size: int = 5
    window: Literal["random", "prefix"] = "random"  # prefix: support = the user's first K items
    # How many shards the training users are sampled from. 0: one per worker (each worker holds and samples
    # from its own 1/N of the users). N in a single process: sample as N workers would, so one process
    # reproduces an N-worker run's task stream (tests; debugging a distributed run on a laptop).
    shards: int = 0

    def __post_init__(self) -> None:
        _positive(self, "tasks", "support_min", "support_max", "query_size")
        if self.shards < 0:
            raise ValueError(f"tasks.shards must be >= 0, got {self.shards}")
        if self.support_min > self.support_max:
            raise ValueError("tasks.support_min must be <= tasks.support_max")


# Inner steps, trained or at test time: few-shot adaptation takes 1-10 (the evaluation's grid tops at its
# STEP_GRID); each is a forward and backward pass per task or request, so a count past this is a mistake
# (10**11 steps made `metarec recommend` hang), not a setting.
MAX_ADAPTATION_STEPS = 1000


@dataclass
class MetaConfig:
    # A name in metarec_dist.meta.ALGORITHMS; the algorithm checks the options below (`build_algorithm`).
    algorithm: str = "fomaml"
    inner_lr: float = 0.5
    adaptation_steps: int = 3
    meta_batch_size: int = 64  # tasks per meta-step, summed over all workers
    # FOMAML / Meta-SGD: weight of an extra query loss at the un-adapted fast weights (0 = pure first-order
    # MAML); > 0 keeps the backbone a good in-context learner on its own, so adaptation starts from `none`'s
    # level.
    init_query_weight: float = 0.0
    # FOMAML / Meta-SGD: weight of SASRec's next-item loss at every position of the task window, beside the
    # query loss after adaptation (0 = the query loss only).
    dense_weight: float = 0.0
    # The dense term's horizon h: every window position predicts the SET of its next h items (masked where
    # the window ends), scored from that one state, as the evaluation scores a user's next items from the
    # support's end state: the meta-objective at every split point at once. 1 = SASRec's next-item loss.
    # Acted on by `sasrec` and, with dense_weight > 0, by the algorithms that take dense_weight.
    dense_horizon: int = 1
    # Drop a dense target already seen in the prefix (or earlier in the same horizon), as the evaluation
    # removes support items and repeats from the relevant set.
    dense_exclude_seen: bool = False

    def __post_init__(self) -> None:
        _positive(self, "meta", "meta_batch_size")
        if isinstance(self.dense_horizon, bool) or not isinstance(self.dense_horizon, int):
            raise ValueError(f"meta.dense_horizon must be an integer >= 1, got {self.dense_horizon!r}")
        if self.dense_horizon < 1:
            raise ValueError(f"meta.dense_horizon must be an integer >= 1, got {self.dense_horizon}")
        for name in ("init_query_weight", "dense_weight"):
            if not getattr(self, name) >= 0:  # also catches NaN
                raise ValueError(f"meta.{name} must be a number >= 0, got {getattr(self, name)}")
        if not 0 <= self.adaptation_steps <= MAX_ADAPTATION_STEPS:
            raise ValueError(
                f"meta.adaptation_steps must be in [0, {MAX_ADAPTATION_STEPS}], got {self.adaptation_steps}"
            )
        if not (math.isfinite(self.inner_lr) and self.inner_lr >= 0):
            raise ValueError(f"meta.inner_lr must be a finite number >= 0, got {self.inner_lr}")


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = 1.0  # 0 disables; set explicitly because DeepSpeed's default changed to 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"optim.lr must be a finite number > 0, got {self.lr}")
        if len(self.betas) != 2:
            raise ValueError("optim.betas must have two values, e.g. [0.9, 0.999]")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must both be in [0, 1), e.g. [0.9, 0.999], got {self.betas}")
        # torch.optim checks these only when the optimizer is built, after the data is prepared.
        _at_least(self, "optim", 0, "weight_decay", "eps", "warmup_steps", "grad_clip")


@dataclass
class TrainConfig:
    meta_steps: int = 200  # 0: train nothing; the run validates and checkpoints its initial model
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0  # 0: only at the end
    eval_users: int = 256  # validation users used for the periodic cold-start evaluation
    # Meta-steps left out of the throughput figures (tasks/s, tokens/s, MFU): the first steps pay for
    # allocator and kernel warm-up and, on a fresh Ray cluster, for actors still starting beside the worker.
    timing_warmup: int = 0
    # The support sizes of the periodic validation (None: K = 3, capped at tasks.support_max); its criterion
    # is NDCG@10 averaged over them (leave-one-out: the LOO NDCG@10).
    eval_shots: list[int] | None = None
    # The inner steps an adapting algorithm's periodic validation takes, at meta.inner_lr (None: its trained
    # meta.adaptation_steps; 0: the initialisation alone). Early stopping keeps the weights that are best at
    # this adaptation, so set it to what the run will be served with: e.g. 0 for `metarec export --steps 0`
    # (on Amazon Sports the GPU recipe's gain is in its initialisation; docs/results/amazon-sports.md).
    eval_steps: int | None = None
    # How an adapting algorithm's periodic and final validations adapt: "trained" (meta.adaptation_steps or
    # train.eval_steps, at meta.inner_lr) or "searched": for each support size the best point of the grid
    # `metarec evaluate` searches at test time (steps 0/1/3/5/10 and the trained ones, inner lr x0.25-x2),
    # scored in one pass per batch. Early stopping then keeps the weights that are best at the adaptation
    # they will be evaluated with: on MovieLens 100K the trained adaptation's best step lost 5-7% at K = 1
    # to the searched one's (docs/results/amazon-sports.md, twenty-eighth session). About 5x a
    # "trained" validation's time (README). Algorithms that do not adapt validate at step 0 either way.
    # The final validation's choice is saved with the checkpoint; recommend and serve apply it.
    eval_adaptation: Literal["trained", "searched"] = "trained"
    # Early stopping: stop after this many periodic validations (every train.eval_every steps) without a new
    # best criterion; the best validated weights are what the run then validates, saves and exports. 0: off.
    early_stop_patience: int = 0
    # Initialise the model's weights (not the optimizer, schedule or task stream) from a finished run: its
    # run folder, a checkpoint or an export (e.g. a `sasrec` run meta-fine-tuned by `fomaml`). "{seed}" in it
    # is replaced by train.seed, so one config warm-starts every seed from the source run of the same seed.
    init_from: str | None = None
    # Model parameters left out of training (requires_grad off, so no gradient and no optimizer state), each
    # named by a dotted prefix of the model's parameter names: e.g. [backbone, item_emb] meta-trains only the
    # fast-weight machinery (fast_init, item_factors, Meta-SGD's rates) on top of an init_from model.
    freeze: list[str] = field(default_factory=list)
    # A first training stage: the config file of a run trained (to its end, e.g. a converged `sasrec`) into
    # <run folder>/pretrain before this run, which then starts from its weights as init_from would. The stage
    # takes this config's data, eval, runtime, logging, train.seed and checkpoint.resume (the two cannot
    # disagree on data); the rest is its own file. A relative path is found next to this config file, else
    # in the current directory (load_config makes it absolute). See metarec_dist/train/pretrain.py.
    pretrain: str | None = None

    def __post_init__(self) -> None:
        _positive(self, "train", "log_every", "eval_users")
        _at_least(self, "train", 0, "eval_every")
        if self.eval_steps is not None and not 0 <= self.eval_steps <= MAX_ADAPTATION_STEPS:  # an int
            raise ValueError(
                f"train.eval_steps must be null (the trained meta.adaptation_steps) or a whole number in "
                f"[0, {MAX_ADAPTATION_STEPS}] (0: validate the initialisation alone), got {self.eval_steps!r}"
            )
        check_seed("train.seed", self.seed)
        if isinstance(self.meta_steps, bool) or self.meta_steps < 0:
            raise ValueError(
                f"train.meta_steps must be >= 0 (0: no step: validate and save the initial model, e.g. the "
                f"train.init_from model on this data), got {self.meta_steps!r}"
            )
        if self.pretrain is not None and not str(self.pretrain).strip():
            raise ValueError("train.pretrain must be the path of a config file (or null)")
        if self.pretrain is not None and self.init_from is not None:
            raise ValueError(
                f"train.init_from ({self.init_from}) and train.pretrain ({self.pretrain}) are both set: "
                "pretrain trains the run this one starts from; set one of them (init_from: null)"
            )
        if any(not str(n).strip() for n in self.freeze) or len(set(self.freeze)) != len(self.freeze):
            raise ValueError(
                f"train.freeze must list distinct parameter names or prefixes (e.g. [backbone, item_emb]): "
                f"{self.freeze}"
            )
        if self.eval_adaptation == "searched" and self.eval_steps is not None:
            raise ValueError(
                "train.eval_steps fixes the validation's adaptation steps and train.eval_adaptation: "
                "searched searches them: set train.eval_steps: null, or train.eval_adaptation: trained"
            )
        if self.eval_shots is not None and (not self.eval_shots or min(self.eval_shots) < 1):
            raise ValueError(f"train.eval_shots must be a non-empty list of positive ints: {self.eval_shots}")
        if isinstance(self.early_stop_patience, bool) or self.early_stop_patience < 0:
            raise ValueError(
                f"train.early_stop_patience must be an integer >= 0 (0: off): {self.early_stop_patience!r}"
            )
        if self.early_stop_patience and (self.eval_every < 1 or self.eval_every % self.log_every):
            raise ValueError(
                "train.early_stop_patience needs periodic validations: set train.eval_every to a multiple "
                f"of train.log_every ({self.log_every}: only logged steps validate), not {self.eval_every}"
            )
        if self.init_from is not None and not str(self.init_from).strip():
            raise ValueError("train.init_from must be a run folder, checkpoint or export path (or null)")
        if not 0 <= self.timing_warmup < max(self.meta_steps, 1):
            raise ValueError(
                f"train.timing_warmup must be >= 0 and below train.meta_steps ({self.meta_steps}), "
                f"got {self.timing_warmup}"
            )

    @property
    def init_from_path(self) -> str | None:
        """``init_from`` with "{seed}" replaced by this run's seed."""
        return None if self.init_from is None else self.init_from.replace("{seed}", str(self.seed))


@dataclass
class RuntimeConfig:
    backend: Literal["local", "ray"] = "local"
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1
    gpus_per_worker: float = 1.0
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    deepspeed: bool = False  # local backend: wrap the model in a DeepSpeed engine too (ray always does)
    zero_stage: int = 0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_accum: int = 1
    offload_optimizer: bool = False
    offload_param: bool = False
    reduce_bucket_size: int = 50_000_000
    allgather_bucket_size: int = 50_000_000
    deepspeed_override: str | None = None  # JSON file merged last into the derived DeepSpeed config
    run_name: str = "metarec"
    storage_path: str = "runs"  # local dir, shared file system path or cloud URI
    max_failures: int = 0
    torch_threads: int = 0  # 0: leave torch's default
    # Keep memory freed by torch in the process (glibc malloc thresholds, runtime/allocator.py) instead of
    # returning it to the OS and faulting it back in every step (23% of a CPU run's wall time at 18k items).
    keep_freed_memory: bool = True
    dashboard: bool = False  # a locally started Ray cluster's dashboard (bound to 127.0.0.1)

    def __post_init__(self) -> None:
        _positive(
            self,
            "runtime",
            "num_workers",
            "cpus_per_worker",
            "grad_accum",
            "reduce_bucket_size",
            "allgather_bucket_size",
        )
        _at_least(self, "runtime", 0, "gpus_per_worker", "torch_threads")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"runtime.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.backend == "ray" and self.use_gpu and self.gpus_per_worker == 0:
            # Ray Train accepts it and gives the workers no GPU: their NCCL process group then fails.
            raise ValueError(
                "runtime.gpus_per_worker=0 with runtime.use_gpu=true: the Ray workers would get no GPU; set "
                "runtime.gpus_per_worker=1 (one GPU per worker), or runtime.use_gpu=false"
            )
        self._check_shared_gpus()
        self._check_gpus_above_one()
        if self.max_failures < -1:
            raise ValueError("runtime.max_failures must be >= -1 (-1: retry forever)")
        if self.backend == "local" and not self.deepspeed:
            # Plain PyTorch in this process: DeepSpeed's settings would be silently ignored.
            unused = [
                name
                for name, value in (
                    ("zero_stage", self.zero_stage),
                    ("offload_optimizer", self.offload_optimizer),
                    ("offload_param", self.offload_param),
                    ("deepspeed_override", self.deepspeed_override),
                )
                if value
            ]
            if unused:
                raise ValueError(
                    f"runtime.{', runtime.'.join(unused)}: DeepSpeed settings, but this run does not use "
                    "DeepSpeed (runtime.backend=local with runtime.deepspeed=false); set "
                    "runtime.deepspeed=true (or runtime.backend=ray), or drop them"
                )
        # DeepSpeed offloads the optimizer state only from ZeRO 1 on and the parameters only at ZeRO 3; the
        # derived config would silently drop the request (no memory saved, an OOM later).
        if self.offload_param and self.zero_stage != 3:
            raise ValueError(
                f"runtime.offload_param needs runtime.zero_stage=3 (got {self.zero_stage}); at stage 1-2 "
                "offload the optimizer state instead: runtime.offload_optimizer=true"
            )
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("runtime.offload_optimizer needs runtime.zero_stage 1, 2 or 3 (got 0)")
        # The run folder is storage_path/run_name: a separator or `..` would put it (and what resume and
        # pruning delete) somewhere else.
        if not self.run_name or self.run_name in (".", "..") or any(c in self.run_name for c in "/\\\0"):
            raise ValueError(
                f"runtime.run_name {self.run_name!r}: must be a plain folder name (no '/', '\\' or '..'); "
                "choose the parent folder with runtime.storage_path"
            )

    def _check_shared_gpus(self) -> None:
        """A fraction of a GPU per Ray worker with several workers: Ray packs them onto one GPU (its
        placement fills a GPU before the next, ray-project/ray#48012), each rank's ``cuda`` device is then
        the same GPU, and NCCL refuses two ranks on one device ("Duplicate GPU detected"), after the
        cluster and the workers started. Only ``STRICT_SPREAD`` (one worker per node) keeps them apart."""
        share = self.gpus_per_worker
        if not (self.backend == "ray" and self.use_gpu and 0 < share < 1 and self.num_workers > 1):
            return
        if self.placement_strategy == "STRICT_SPREAD":
            return
        raise ValueError(
            f"runtime.gpus_per_worker={share:g} with runtime.num_workers={self.num_workers}: Ray Train "
            'would put several workers on one GPU, and NCCL refuses two ranks on one device ("Duplicate '
            'GPU detected"); set runtime.gpus_per_worker=1 (one GPU per worker), or '
            "runtime.placement_strategy=STRICT_SPREAD (one worker per node)"
        )

    def _check_gpus_above_one(self) -> None:
        """More than one GPU per Ray worker. A fraction (1.5) Ray refuses: GPU requests above 1 must be whole
        numbers (docs.ray.io, "Fractional resource requirements"; raised when a worker actor is created, after
        the cluster started, and not checked for placement groups: ray-project/ray#66336). A whole number
        (2) Ray Train grants, but a worker here trains on one device (``ray.train.torch.get_device``: the
        first of its GPUs, ray_worker.py), so the others would be reserved and sit idle; more GPUs are
        used as more workers (data parallel, one rank per GPU)."""
        share = self.gpus_per_worker
        if not (self.backend == "ray" and self.use_gpu and share > 1):
            return
        if not float(share).is_integer():
            raise ValueError(
                f"runtime.gpus_per_worker={share:g}: Ray takes a fraction of a GPU only below 1 (above 1 it "
                "must be a whole number), and a worker trains on one GPU; set runtime.gpus_per_worker=1 (one "
                "GPU per worker), or a fraction below 1 to share a GPU"
            )
        gpus = self.num_workers * int(share)
        raise ValueError(
            f"runtime.gpus_per_worker={share:g}: a worker trains on one GPU, so {int(share) - 1} of each "
            f"worker's GPUs would be reserved and idle; set runtime.gpus_per_worker=1 and "
            f"runtime.num_workers={gpus} to train on all {gpus} GPUs (one worker per GPU)"
        )


@dataclass
class CheckpointConfig:
    every: int = 0  # meta-steps between checkpoints; 0: only at the end
    keep: int = 2
    resume: bool = True  # re-running the same run name resumes from its latest complete checkpoint

    def __post_init__(self) -> None:
        _at_least(self, "checkpoint", 0, "every")
        _positive(self, "checkpoint", "keep")


@dataclass
class LoggingConfig:
    wandb: Literal["auto", "off", "offline", "online"] = "off"
    project: str = "metarec-dist"
    entity: str | None = None
    verbose: bool = False


ADAPTATION_CHOICES = ("shared", "per_shot")


@dataclass
class EvalConfig:
    shots: list[int] = field(default_factory=lambda: [1, 3, 5, 10])
    num_relevant: int = 10  # the user's next N interactions are the relevant set
    ks: list[int] = field(default_factory=lambda: [10, 20])
    batch_users: int = 256
    n_boot: int = 1000
    # Items scored at a time in the full ranking: memory is batch_users x item_chunk scores, not x catalogue.
    item_chunk: int = 65536
    # Processes that score the users (`metarec evaluate`, its adaptation grid, eval/reproduce.py): 1 scores
    # them here; N > 1 on N Ray actors (one CPU each), batch by batch, with the same numbers.
    workers: int = 1
    # Validation users the test-time adaptation (steps, inner lr) is chosen on: 0 = all of them; N = a
    # fixed random subset of N (the same for every method and seed), so that the grid's cost stops growing
    # with the dataset. Test users are always all evaluated.
    tune_users: int = 0
    # How the adaptation is chosen across shot counts: "shared" = one (steps, inner lr) for every K, by the
    # criterion averaged over K (every validation user counts once per K: the choice for ~100 of them);
    # "per_shot" = each K its own, by that K's criterion alone (needs enough validation users per K).
    adaptation: str = "shared"
    # Fuse the model's scores with the training users' item co-occurrence counts (eval/fusion.py): the
    # default of `metarec evaluate --fuse` and `metarec export --fuse` (which saves the counts and the weight
    # chosen on validation users, so that `metarec recommend` on the export fuses too).
    fuse: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.fuse, bool):
            raise ValueError(f"eval.fuse must be true or false, got {self.fuse!r}")
        if not self.shots or min(self.shots) < 1:
            raise ValueError(f"eval.shots must be a non-empty list of positive ints, got {self.shots}")
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"eval.ks must be a non-empty list of positive cut-offs, got {self.ks}")
        _positive(self, "eval", "num_relevant", "batch_users", "n_boot")
        if self.adaptation not in ADAPTATION_CHOICES:
            raise ValueError(
                f"eval.adaptation must be one of {', '.join(ADAPTATION_CHOICES)}, got {self.adaptation!r}"
            )
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"eval.workers must be a positive number of processes, got {self.workers!r}")
        if isinstance(self.tune_users, bool) or not isinstance(self.tune_users, int) or self.tune_users < 0:
            raise ValueError(f"eval.tune_users must be an integer >= 0 (0: all), got {self.tune_users!r}")
        if isinstance(self.item_chunk, bool) or not isinstance(self.item_chunk, int) or self.item_chunk < 1:
            raise ValueError(f"eval.item_chunk must be a positive number of items, got {self.item_chunk!r}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def _check_text_encoder(self) -> None:
        """A text encoder with no title to encode, or with the item content off, would be silently unused."""
        if self.model.text_encoder is None:
            return
        if self.model.item_content == "off":
            raise ValueError(
                "model.text_encoder: the titles feed the item content, which model.item_content=off turns "
                "off; drop one of them"
            )
        if not any(f.kind == "title" for f in self.data.item_features):
            raise ValueError(
                "model.text_encoder: it encodes item titles, and data.item_features declares none; declare "
                "the text column, e.g. data.item_features=[{name: title, kind: title}]"
            )

    def __post_init__(self) -> None:
        if self.model.unseen_items == "auto":  # recorded resolved, so a checkpoint says what was trained
            unseen = "exclude" if self.data.protocol == "new_items" else "include"
            self.model = dataclasses.replace(self.model, unseen_items=unseen)
        # Cross-section rules: the ones a single section cannot check.
        self._check_text_encoder()
        needed = self.tasks.support_max + self.tasks.query_size + 1  # +1 for the BOS position
        prefix = self.model.prefix_tokens(self.data)
        if needed + prefix > self.model.max_seq_len:
            plus = " + 1 (the user-feature token)" if prefix else ""
            raise ValueError(
                f"tasks.support_max + tasks.query_size + 1{plus} = {needed + prefix} exceeds "
                f"model.max_seq_len ({self.model.max_seq_len}); raise model.max_seq_len or shorten the tasks"
            )
        shards = self.runtime.num_workers * self.runtime.grad_accum
        if self.meta.meta_batch_size % shards:
            raise ValueError(
                f"meta.meta_batch_size ({self.meta.meta_batch_size}) must be a multiple of "
                f"runtime.num_workers x runtime.grad_accum ({shards}) so every rank gets the same number "
                "of tasks (uneven ranks hang the collectives)"
            )
        too_long = [k for k in self.train.eval_shots or [] if k > self.tasks.support_max]
        if too_long:
            raise ValueError(
                f"train.eval_shots {too_long} exceed tasks.support_max ({self.tasks.support_max}): the model "
                "never saw supports that long; validate on shorter ones or raise tasks.support_max"
            )
        if self.train.early_stop_patience and self.runtime.zero_stage > 0:
            raise ValueError(
                "train.early_stop_patience keeps the best weights in memory, which "
                f"ZeRO-{self.runtime.zero_stage} does not restore (its optimizer partitions hold the master "
                "weights): use runtime.zero_stage: 0"
            )
        workers = self.runtime.num_workers
        if self.tasks.shards > 1 and workers > 1 and self.tasks.shards != workers:
            raise ValueError(
                f"tasks.shards ({self.tasks.shards}) must be 0 or runtime.num_workers ({workers}): "
                "with several workers every worker samples from its own shard"
            )
        if self.tasks.shards > 1 and self.meta.meta_batch_size % (
            self.tasks.shards * self.runtime.grad_accum
        ):
            raise ValueError(
                f"meta.meta_batch_size ({self.meta.meta_batch_size}) must be a multiple of tasks.shards x "
                f"runtime.grad_accum ({self.tasks.shards * self.runtime.grad_accum})"
            )

    @property
    def tasks_per_worker(self) -> int:
        return self.meta.meta_batch_size // (self.runtime.num_workers * self.runtime.grad_accum)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _positive(section: Any, name: str, *fields: str) -> None:
    _at_least(section, name, 1, *fields)


def _at_least(section: Any, name: str, least: int, *fields: str) -> None:
    """Each of ``fields`` of ``section`` (called ``name`` in messages) is a number >= ``least``."""
    for f in fields:
        if not getattr(section, f) >= least:  # `not >=`: NaN fails too
            raise ValueError(f"{name}.{f} must be >= {least}, got {getattr(section, f)}")


# ---------------------------------------------------------------------------------------- loading


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a plain dict, checking keys and types against the type hints."""
    where = prefix or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {_yaml_kind(data)}", prefix)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names, key=str)
    if unknown:
        full = [f"{prefix + '.' if prefix else ''}{k}" for k in unknown]
        hint = ""
        if any(":" in str(k) for k in unknown):  # YAML reads `{name:age}` as the one key "name:age"
            hint = (
                "; YAML needs a space after each colon: {name: age, kind: token}, not {name:age,kind:token}"
            )
        near = [m[0] for k in unknown for m in [difflib.get_close_matches(str(k), names, 1)] if m]
        if near:
            hint += f"; did you mean {', '.join(near)}?"
        raise ConfigError(
            f"unknown config key(s): {', '.join(full)}; valid keys here: {', '.join(sorted(names))}{hint}",
            *full,
        )
    kwargs = {k: _coerce(hints[k], v, f"{prefix + '.' if prefix else ''}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ValueError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ConfigError(errors[0], key)
        raise ConfigError(f"{key}: {value!r} does not match {tp}", key)
    if origin is Literal:
        if isinstance(value, bool):
            # YAML 1.1 reads a bare `off`/`on`/`no`/`yes` as a bool; map it back to the literal it spelled.
            spelled = [a for a in args if isinstance(a, str) and yaml.safe_load(a) is value]
            if len(spelled) == 1:
                return spelled[0]
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}", key)
        return value
    if origin is list:
        value = _one_element_list(args[0], value, key)
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}", key)
        return {_coerce(args[0], k, key): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    return _scalar(tp, value, key)


def _one_element_list(item: Any, value: Any, key: str) -> list:
    """``value`` when it is a list; a single string as the one-element list it can only mean when the items
    are strings (``--set train.freeze=backbone`` is ``[backbone]``); anything else is an error."""
    if isinstance(value, list):
        return value
    if isinstance(value, str) and _text_type(item) and "," not in value:
        return [value]
    if isinstance(value, str) and "," in value:  # `--set eval.shots=1,3`: the brackets were left out
        parts = ", ".join(v.strip() for v in value.split(","))
        raise ConfigError(f"{key}: expected a list, got {value!r}; write the list as [{parts}]", key)
    raise ConfigError(f"{key}: expected a list, got {value!r}", key)


def _text_type(tp: Any) -> bool:
    """Whether ``tp`` takes strings only: ``str`` or a ``Literal`` of strings."""
    if typing.get_origin(tp) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    return tp is str


def _scalar(tp: Any, value: Any, key: str) -> Any:
    if tp is Any:
        return value
    if value is None:  # `key:` with nothing after it, or `--set key=`
        raise ConfigError(
            f"{key}: has no value (null); give {_A.get(tp, tp.__name__)}, or leave the key out for its "
            "default",
            key,
        )
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # PyYAML reads `1e-3` (no dot) as a string; accept any text Python reads as a float.
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got str {value!r}", key) from None
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        # nan/inf pass every `< 0` check and only blow up mid-training
        raise ConfigError(f"{key}: must be a finite number, got {value!r}", key)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        got = f"{type(value).__name__} {value!r}"
        raise ConfigError(f"{key}: expected {tp.__name__}, got {got}{_what_to_write(tp, value)}", key)
    return value


def _what_to_write(tp: Any, value: Any) -> str:
    """A hint for the YAML readings users trip on: 1e3 is text, an unquoted yes/no/on/off a boolean."""
    if tp is int and isinstance(value, str) and _whole_number(value) is not None:
        return f"; write it without quotes or exponent: {_whole_number(value)}"
    if tp is str and isinstance(value, bool):
        return "; YAML reads an unquoted yes/no/on/off/true/false as a boolean: quote the text"
    if tp is str and isinstance(value, int | float):
        return f"; quote it if you meant the text: '{value}'"
    return ""


_A = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _whole_number(text: str) -> int | None:
    """The whole number ``text`` spells (``"1e3"``, ``"10"``), else None."""
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


@dataclass(frozen=True)
class Setting:
    """A value the program sets itself from one of its own flags (``metarec data stats --path``): applied
    like a ``--set``, but not parsed as YAML (a path with " #" or ": " in it stays the path) and, when it is
    wrong, the error names ``origin`` (e.g. "--path"), not a ``--set`` the user never typed."""

    key: str
    value: Any
    origin: str

    def describe(self) -> str:
        """How the user gave it: the flag, with its value when that is short."""
        value = str(self.value)
        return f"{self.origin} {value}" if value and len(value) <= 80 and "\n" not in value else self.origin


Override = str | Setting


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value); the value is parsed as YAML so 3, 1e-3, [1,2], null work."""
    example = "for example --set meta.inner_lr=0.1"
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected KEY=VALUE, {example}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"--set {text!r}: no key before '='; expected KEY=VALUE, {example}")
    if "[" in key:
        raise UserError(f"--set {text!r}: a list is set whole, not by index: e.g. --set eval.shots=[1,3,5]")
    parts = key.split(".")
    if not all(p.strip() for p in parts):
        raise UserError(f"--set {text!r}: empty part in the key {key!r}; keys are like model.hidden_size")
    return [p.strip() for p in parts], _parse_yaml(raw, f"--set {key}") if raw.strip() else None


def merge_override(tree: dict, parts: list[str], value: Any, origin: str | None = None) -> None:
    """Set ``tree[parts[0]][parts[1]]... = value``; ``origin`` names the setting in errors (the --set)."""
    node = tree
    for i, p in enumerate(parts[:-1]):
        child = node.setdefault(p, {})
        if child is None:  # `model:` with nothing under it: an empty section
            child = node[p] = {}
        if not isinstance(child, dict):
            origin = origin or f"--set {'.'.join(parts)}"
            section = ".".join(parts[: i + 1])
            raise ConfigError(f"{origin}: {section} is {child!r}, not a section", ".".join(parts))
        node = child
    node[parts[-1]] = value


def _apply(tree: dict, override: Override) -> None:
    if isinstance(override, Setting):
        merge_override(tree, override.key.split("."), override.value, override.describe())
    else:
        parts, value = parse_override(override)
        merge_override(tree, parts, value, f"--set {override}")


def read_yaml(path: str | Path) -> dict:
    """The mapping in the YAML file ``path``; every mistake a ``UserError`` of one line naming the file (and
    the line, for a syntax error or a key given twice)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"config file {p}: is a folder; give a YAML file, e.g. configs/tiny.yaml")
    if not p.exists():
        raise UserError(f"config file not found: {p}{_near_file(p)}")
    if not (p.is_file() or stat.S_ISFIFO(p.stat().st_mode)):  # a pipe: `--config <(...)`
        raise UserError(f"config file {p}: not a regular file (a device or socket); give a YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"config file {p}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    data = _parse_yaml(text, f"config file {p}")
    if data is None:  # an empty file is more likely a truncated or wrong one than a wish for the defaults
        raise UserError(f"config file {p}: has no settings (empty or comments only); write {{}} for defaults")
    if not isinstance(data, dict):
        raise UserError(
            f"config file {p}: the top level must be a mapping of sections (model:, train:, ...), "
            f"got a {_yaml_kind(data)}"
        )
    return data


def _near_file(path: Path) -> str:
    """A "did you mean configs/tiny.yaml?" clause for a misspelt name beside existing YAML files, or ""."""
    try:
        names = [f.name for f in path.parent.iterdir() if f.suffix in (".yaml", ".yml")]
    except OSError:
        return ""
    near = difflib.get_close_matches(path.name, names, 1)
    return f"; did you mean {path.parent / near[0]}?" if near else ""


def _parse_yaml(text: str, where: str) -> Any:
    """``text`` parsed as YAML; a syntax error or a key given twice in a mapping is a one-line ``UserError``
    starting with ``where`` (PyYAML silently keeps the last of two equal keys)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(node, where, "", set())
        return loader.construct_document(node)
    except RecursionError:  # PyYAML composes and constructs recursively
        raise UserError(f"{where}: nested too deeply to read") from None
    except yaml.MarkedYAMLError as exc:
        raise UserError(f"{where}: {_yaml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's several-line report as one clause: where and what is wrong (with the usual cause for tabs)."""
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = " ".join(p for p in (exc.context, exc.problem) if p)
    if "'\\t'" in problem:
        problem += " (YAML indents with spaces, not tabs)"
    return f"{where}not valid YAML: {problem}"


def _check_duplicate_keys(node: yaml.Node, where: str, path: str, visited: set[int]) -> None:
    """Raise naming the key and both lines when a mapping in ``node`` gives one key twice (merge keys
    ``<<`` excepted: overriding a merged key is what they are for). ``visited``: each node once, as an
    alias shares its node (re-walking them makes nested aliases exponential, "billion laughs")."""
    if id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        _check_number(node, where, path)
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, where, f"{path}[{i}]", visited)
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[tuple[str, str], int] = {}
    for key, value in node.value:
        if key.tag == "tag:yaml.org,2002:merge" or not isinstance(key, yaml.ScalarNode):
            continue
        name = f"{path}.{key.value}" if path else str(key.value)
        line = key.start_mark.line + 1
        first = seen.get((key.tag, key.value))
        if first is not None:
            lines = f"line {line}" if first == line else f"lines {first} and {line}"
            raise UserError(
                f"{where}: {name} is given twice ({lines}); YAML would silently keep the last one: delete "
                "one of them"
            )
        seen[(key.tag, key.value)] = line
        _check_duplicate_keys(value, where, name, visited)


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_OCTAL = re.compile(r"[-+]?0[0-7_]+")  # YAML 1.1 (PyYAML): a leading 0 means octal


def _check_number(node: yaml.ScalarNode, where: str, path: str) -> None:
    """Raise for a plain number that YAML 1.1 reads other than as written: ``010`` is octal 8 and ``12:30``
    base-60 750 (YAML 1.2 reads 10 and a string). A silently different value (8 layers for 10) is worse than
    an error; the loader keeps PyYAML's YAML 1.1 reading, which every other YAML 1.1 tool shares, rather
    than resolving numbers its own way."""
    text = node.value
    if node.style is not None or node.tag not in (_INT, _FLOAT):  # quoted, or not a number
        return
    value = yaml.safe_load(text)
    if ":" in text:
        how, meant = f"base-60 {value} (like a time)", "write the number meant"
    elif node.tag == _INT and _OCTAL.fullmatch(text) and int(text.replace("_", "")) != value:
        how, meant = f"octal {value}", f"write {int(text.replace('_', ''))}"
    else:
        return
    name = f"{path}: {text} (line {node.start_mark.line + 1})" if path else text
    raise UserError(f"{where}: {name} is read by YAML 1.1 as {how}; {meant}, or quote it ('{text}') for text")


def _yaml_kind(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean"}.get(type(value), type(value).__name__)


# Paths a config file may give relative to itself: (section, key, what the file is, what to give instead).
BESIDE_CONFIG = (
    ("train", "pretrain", "config file", "give the config file of the first stage"),
    (
        "runtime",
        "deepspeed_override",
        "file",
        "give a JSON file of DeepSpeed settings, e.g. configs/deepspeed/zero3-offload.json",
    ),
)


def load_config(path: str | Path | None = None, overrides: Sequence[Override] = ()) -> Config:
    """Defaults, then the YAML file, then each ``--set`` override (or program ``Setting``) in order; the
    paths in ``BESIDE_CONFIG`` (``train.pretrain``, ``runtime.deepspeed_override``) made absolute
    (``resolve_beside``). A mistake is a ``UserError`` naming where the faulty value came from (``blame``)."""
    tree = read_yaml(path) if path is not None else {}
    for override in overrides:
        _apply(tree, override)
    for section, key, what, hint in BESIDE_CONFIG:
        part = tree.get(section)
        if not (isinstance(part, dict) and isinstance(part.get(key), str) and part[key].strip()):
            continue
        try:
            part[key] = resolve_beside(f"{section}.{key}", part[key], path, what, hint)
        except ValueError as exc:  # it names the config file it looked beside; name a --set that gave it
            if culprit(exc, overrides) is None:
                raise
            raise UserError(blame(exc, path, overrides)) from None
    try:
        return from_dict(Config, tree)
    except ValueError as exc:
        raise UserError(blame(exc, path, overrides)) from None


# A dotted config key inside a message: `model.hidden_size`, `data.item_features[2].kind`.
_KEY = re.compile(r"(?<![\w./-])([a-z_]+(?:\.[a-z_]+|\[\d+\])+)(?![\w/-])")


def blame(exc: ValueError, path: str | Path | None, overrides: Sequence[Override]) -> str:
    """``exc``'s message prefixed with where the faulty value came from: the last override that set the key
    it is about (``--set train.freeze=3: expected a list ...``, ``--path x: ...``), else the config file.
    Without a file, a user's ``--set`` is not named: the message names the key, and nothing else set it."""
    message = str(exc)
    override = culprit(exc, overrides)
    if override is None:
        return message if path is None else f"{path}: {message}"
    if path is None and not isinstance(override, Setting):
        return message
    said = override.describe() if isinstance(override, Setting) else f"--set {override}"
    key = _override_key(override)
    value = override.value if isinstance(override, Setting) else override.split("=", 1)[1].strip()
    # "KEY: ...", "KEY VALUE: ..." (a path not found) and "KEY=VALUE: ..." repeat what the --set says.
    for said_again in (f"{key}: ", f"{key} {value}: ", f"{key}={value}: "):
        message = message.removeprefix(said_again)
    return f"{said}: {message}"


def culprit(exc: ValueError, overrides: Sequence[Override]) -> Override | None:
    """The last of ``overrides`` that set a key ``exc`` is about (None: the file's or the defaults')."""
    keys = getattr(exc, "keys", ()) or tuple(_KEY.findall(str(exc)))
    for override in reversed(overrides):
        if any(_same_value(_override_key(override), k) for k in keys):
            return override
    return None


def _override_key(override: Override) -> str:
    return override.key if isinstance(override, Setting) else override.split("=", 1)[0].strip()


def _same_value(set_key: str, faulty: str) -> bool:
    """Whether setting ``set_key`` set (part of) ``faulty``: the same key, a section holding it, or a key
    under it (`--set model.foo.bar=1` is the unknown key model.foo)."""
    return (
        set_key == faulty
        or faulty.startswith((f"{set_key}.", f"{set_key}["))
        or set_key.startswith(f"{faulty}.")
    )


def resolve_beside(
    key: str, value: str, config_path: str | Path | None, what: str = "file", hint: str = ""
) -> str:
    """The path ``value`` of ``key`` made absolute: as given when absolute; else next to the config file
    that names it when the file is there (``pretrain: coldstart-sasrec.yaml`` beside ``coldstart.yaml``),
    else relative to the current directory. A relative path found in neither place is a ``ConfigError``
    naming both (``what``: "config file", "file"; ``hint``: what to give instead); otherwise whether the
    file exists is checked where it is read."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    if config_path is None:
        return str(p.resolve())
    beside = (Path(config_path).parent / p).resolve()
    if beside.is_file() or p.is_file():
        return str(beside if beside.is_file() else p.resolve())
    raise ConfigError(
        f"{key} {value}: {what} not found next to {config_path} ({beside}) nor in the current folder "
        f"({p.resolve()})" + (f"; {hint}" if hint else ""),
        key,
    )


def resolve_pretrain(value: str, config_path: str | Path | None) -> str:
    """``train.pretrain`` as an absolute path (``resolve_beside``)."""
    section, key, what, hint = BESIDE_CONFIG[0]
    return resolve_beside(f"{section}.{key}", value, config_path, what, hint)


def with_overrides(cfg: Config, overrides: Sequence[Override]) -> Config:
    """A copy of ``cfg`` with ``--set``-style overrides applied (and validated again)."""
    tree = cfg.to_dict()
    for override in overrides:
        _apply(tree, override)
    try:
        return from_dict(Config, tree)
    except ValueError as exc:
        raise UserError(blame(exc, None, overrides)) from None


def resolve_loss(cfg: Config, num_items: int) -> Config:
    """``cfg`` with ``model.loss: auto`` made concrete for a catalogue of ``num_items`` items (full softmax up
    to ``model.sampled_above``, sampled above); explicit ``full``/``sampled`` are kept. The trainer resolves
    it before building anything, so checkpoints record the loss that was trained."""
    if cfg.model.loss != "auto":
        return cfg
    loss = "sampled" if num_items > cfg.model.sampled_above else "full"
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, loss=loss))


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
