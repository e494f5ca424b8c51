"""DeepSpeed: the config derived from typed fields, and the engine around the meta-learner.

The trainer drives it exactly like ``LocalEngine`` (both are ``TrainEngine``s): ``engine.meta_step(batch)``,
``engine.backward(loss)``, ``engine.step()`` once per micro-batch. DeepSpeed averages the outer gradient
over the data-parallel ranks (all-reduce under ZeRO-0/1, reduce-scatter under ZeRO-2/3), so ranks that each
hold a slice of the global meta-batch end with the same update a single process would compute on the whole
meta-batch.

Fast weights under ZeRO-3: the per-task fast weights are plain tensors created inside ``forward`` (never
DeepSpeed parameters), so nothing is partitioned or overwritten. Their meta-learned initialisation
``fast_init``, the tied item table and the algorithm's own parameters (Meta-SGD's learned inner lrs) are
read outside their owning module's ``forward``; they are registered with ``register_external_parameter`` on
the meta-learner, so ZeRO-3 gathers them for the whole meta-loss and releases them after. ``fast_init`` is
small enough to stay persistent (below ``stage3_param_persistence_threshold``); the item table is gathered
like any other partitioned weight.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metarec_dist.config import OptimConfig, RuntimeConfig
from metarec_dist.runtime.engine import apply_optim_settings, make_optimizer, make_scheduler

if TYPE_CHECKING:
    from metarec_dist.meta import MetaLearner, MetaStepOutput
    from metarec_dist.meta.learner import PointSink
    from metarec_dist.metrics.ranking import ScoreSink
    from metarec_dist.tasks.types import MetaBatch


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _zero_section(rt: RuntimeConfig) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": rt.zero_stage}
    if rt.zero_stage >= 1:
        zero.update(
            reduce_bucket_size=rt.reduce_bucket_size,
            allgather_bucket_size=rt.allgather_bucket_size,
            overlap_comm=rt.use_gpu,  # overlap needs CUDA streams; on CPU it only adds copies
            contiguous_gradients=True,
        )
    if rt.offload_optimizer and rt.zero_stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": rt.use_gpu}
    if rt.offload_param and rt.zero_stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": rt.use_gpu}
    if rt.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False  # export consolidates from shards
    return zero


def deepspeed_config(
    optim: OptimConfig, rt: RuntimeConfig, micro_batch: int, world_size: int
) -> dict[str, Any]:
    """The DeepSpeed JSON config from typed fields; ``rt.deepspeed_override`` (a JSON file) merged last."""
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": rt.grad_accum,
        "train_batch_size": micro_batch * rt.grad_accum * world_size,
        # Explicit: DeepSpeed >= 0.19.3 clips at 1.0 when the key is absent.
        "gradient_clipping": optim.grad_clip,
        "zero_optimization": _zero_section(rt),
        "bf16": {"enabled": rt.precision == "bf16"},
        "fp16": {"enabled": rt.precision == "fp16"},
        "steps_per_print": 1_000_000_000,
        "wall_clock_breakdown": False,
        # A torch AdamW is passed in (no JIT-built kernels on CPU); allow it beside ZeRO-Offload.
        "zero_force_ds_cpu_optimizer": False,
        "zero_allow_untested_optimizer": True,
    }
    if rt.deepspeed_override:
        cfg = deep_merge(cfg, read_override(rt.deepspeed_override))
    check_batch_arithmetic(cfg, world_size)
    return cfg


def read_override(value: str) -> dict[str, Any]:
    """The JSON object of ``runtime.deepspeed_override`` (the CLI reads it before any work, too)."""
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"runtime.deepspeed_override: file not found: {path}")
    try:
        override = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"runtime.deepspeed_override {path}: not valid JSON: {exc}") from None
    if not isinstance(override, dict):
        raise ValueError(f"runtime.deepspeed_override {path}: not a JSON object of DeepSpeed settings")
    return override


def check_batch_arithmetic(cfg: dict[str, Any], world_size: int) -> None:
    micro, accum = cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"]
    if cfg["train_batch_size"] != micro * accum * world_size:
        raise ValueError(
            f"DeepSpeed batch arithmetic: train_batch_size {cfg['train_batch_size']} != "
            f"micro batch {micro} x "
            f"accumulation {accum} x workers {world_size}; fix meta.meta_batch_size / runtime.grad_accum or "
            "the override file"
        )


def select_cpu_accelerator() -> None:
    """Give a CPU run DeepSpeed's CPU accelerator by name, before DeepSpeed's first import detects one.

    Auto-detection, finding no GPU, warns once "Setting accelerator to CPU. If you have GPU or other
    accelerator, we were unable to detect it." -- meant for a GPU it failed to find, not for a run that asked
    for the CPU (``runtime.use_gpu=false``). ``DS_ACCELERATOR`` is DeepSpeed's documented override; it is read
    only by that first detection (the accelerator is then cached), so it is set for the import alone and not
    left to the processes this one starts. A GPU run still auto-detects, and still warns when it finds none;
    a ``DS_ACCELERATOR`` the user set wins; every other DeepSpeed warning is untouched."""
    if "DS_ACCELERATOR" in os.environ:
        return
    os.environ["DS_ACCELERATOR"] = "cpu"
    try:
        from deepspeed.accelerator import get_accelerator

        get_accelerator()
    finally:
        del os.environ["DS_ACCELERATOR"]


def skip_inference_shm_build() -> None:
    """Mark DeepSpeed's CPU shared-memory all-reduce op as unavailable, so it is not JIT-compiled.

    DeepSpeed's torch backend builds it when the communication backend starts, but only uses it for
    ``inference_all_reduce`` (AutoTP inference, DeepSpeed PR #5391); training all-reduces go through
    torch.distributed (gloo here). The compile takes minutes of a 2-core machine in every fresh environment
    (and again whenever the build flags change), for nothing we call. ``deepspeed.ops.__compatible_ops__``
    is DeepSpeed's own cache of which ops may be built; GPU accelerators have no such op, so this is a no-op
    there."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        deepspeed.ops.__compatible_ops__[builder.NAME] = False


def ensure_process_group(use_gpu: bool) -> None:
    """A one-process group when nothing (Ray Train, torchrun) has set one up: DeepSpeed needs it."""
    import deepspeed

    if torch.distributed.is_initialized():
        return
    backend = "nccl" if use_gpu else "gloo"
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    if int(os.environ["WORLD_SIZE"]) == 1:
        # One process: an in-memory store, so no rendezvous server. torch's TCPStore (env://) listens on
        # every interface, whatever MASTER_ADDR says; DeepSpeed adopts the group initialized here.
        store = torch.distributed.HashStore()
        torch.distributed.init_process_group(backend, store=store, rank=0, world_size=1)
    else:  # torchrun-style: its MASTER_ADDR/MASTER_PORT, or one on this machine
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    deepspeed.init_distributed(dist_backend=backend, verbose=False)


class DeepSpeedEngine:
    """DeepSpeed's engine as a ``TrainEngine``: everything is DeepSpeed's own (``backward``, ``step``,
    ``train``, ``get_lr``, ``module``, ...) except the named meta-learner calls and the checkpoint contract
    (a failed load is an error)."""

    def __init__(self, engine: Any, optim: OptimConfig) -> None:
        self.engine = engine
        self.optim = optim
        # DeepSpeed copies the gradient norm from its optimizer wrapper (ZeRO, fp16, bf16 set
        # ``_global_grad_norm``); a plain torch optimizer (ZeRO-0 fp32) has none, so the norm stays None and
        # we take it ourselves (see ``step``).
        self._own_norm = not hasattr(engine.optimizer, "_global_grad_norm")
        self._norm: torch.Tensor | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "engine":  # not set yet (e.g. while unpickling): no infinite recursion
            raise AttributeError(name)
        return getattr(self.engine, name)

    # Both go through the engine's forward: under ZeRO-3 that is where the parameters are gathered.
    def meta_step(self, batch: MetaBatch, track_adaptation: bool = True) -> MetaStepOutput:
        return self.engine(batch, track_adaptation)

    def score(self, batch: MetaBatch, steps: int | None = None) -> torch.Tensor:
        return self.engine(batch, scoring=True, score_steps=steps)

    def score_chunks(self, batch: MetaBatch, steps: int | None, sink: ScoreSink) -> None:
        self.engine(batch, scoring=True, score_steps=steps, score_sink=sink)

    def score_points(self, batch: MetaBatch, points: Sequence[tuple[int, float]], sink: PointSink) -> None:
        self.engine(batch, scoring=True, score_points=points, point_sink=sink)

    def step(self) -> None:
        """DeepSpeed's ``step``; at ZeRO-0 fp32 it first takes the gradient norm of the optimizer step.

        Taken before DeepSpeed clips, as its ZeRO/fp16/bf16 optimizers report it (and ``LocalEngine``): the
        norm of the gradient the step is computed from. At the accumulation boundary ``backward`` has already
        averaged the gradients over the data-parallel ranks (ZeRO-0 all-reduces them whole), so every rank
        holds the same global gradient and its local norm is the global one: no extra collective."""
        if self._own_norm and self.engine.is_gradient_accumulation_boundary():
            grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
            # A tensor: no host sync on every step, only when the norm is read (the logged steps).
            self._norm = torch.nn.utils.get_total_norm(grads) if grads else None
        self.engine.step()

    def get_global_grad_norm(self) -> float | None:
        norm = self.engine.get_global_grad_norm()
        if norm is None and self._own_norm:
            norm = self._norm
        return None if norm is None else float(norm)

    def save_checkpoint(self, save_dir: str, tag: str) -> None:
        self.engine.save_checkpoint(save_dir, tag=tag, client_state={})

    def load_checkpoint(self, load_dir: str, tag: str) -> None:
        path, _ = self.engine.load_checkpoint(load_dir, tag=tag)
        # DeepSpeed only warns and returns (None, None) when the tag or a shard is missing: fail loudly.
        if path is None:
            raise ValueError(
                f"DeepSpeed could not load checkpoint {load_dir} (tag {tag!r}): a shard is missing"
            )
        apply_optim_settings(self.engine.lr_scheduler, self.optim)  # the checkpoint's optim.* are restored


def build_deepspeed_engine(
    module: MetaLearner,
    optim: OptimConfig,
    rt: RuntimeConfig,
    total_steps: int,
    micro_batch: int,
    world_size: int,
) -> DeepSpeedEngine:
    if not rt.use_gpu:
        select_cpu_accelerator()  # before `import deepspeed`, which detects the accelerator
    import deepspeed

    from metarec_dist.runtime.quiet import filter_training_chatter
    from metarec_dist.runtime.safe_load import install_safe_checkpoint_engine

    filter_training_chatter()  # known-harmless per-step warnings; see runtime/quiet.py for why each is
    if not rt.use_gpu:
        skip_inference_shm_build()
    ensure_process_group(rt.use_gpu)
    if rt.zero_stage == 3:
        for p in module.external_parameters():
            deepspeed.zero.register_external_parameter(module, p)
    engine, *_ = deepspeed.initialize(
        model=module,
        model_parameters=[p for p in module.parameters() if p.requires_grad],
        optimizer=lambda params: make_optimizer(params, optim),
        lr_scheduler=lambda opt: make_scheduler(opt, optim, total_steps),
        config=deepspeed_config(optim, rt, micro_batch, world_size),
    )
    install_safe_checkpoint_engine(engine)
    if rt.zero_stage == 0 and engine.dp_world_size == 1:
        # One data-parallel rank: there is nothing to all-reduce, yet DeepSpeed's ZeRO-0 path still
        # flattens every gradient into buckets, all-reduces them over a one-process group and copies them
        # back after each backward (~2 ms of a ~33 ms tiny-config step on CPU). ZeRO >= 1 is left alone:
        # its reduce hooks also move gradients into the optimizer's partitions.
        engine.enable_backward_allreduce = False
    return DeepSpeedEngine(engine, optim)
