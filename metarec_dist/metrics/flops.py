"""FLOPs of one meta-step, counted honestly (backbone, attention, item scoring and the inner loop), for
tokens/s -> MFU. Conventions as in the PaLM/nanoGPT estimate: a matmul of ``m x k`` by ``k x n`` is
``2mkn`` FLOPs forward, and backward costs twice the forward.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100/H200 SXM


@dataclass
class StepShape:
    tokens: int  # 1 + Kmax + Q per task (padding included: the backbone computes it)
    support_positions: float  # scored support positions per task (mean K)
    query_positions: int
    hidden: int
    layers: int
    num_items: int
    backbone_params: int  # matmul weights of the backbone (embeddings excluded)
    adaptation_steps: int
    fast_params: int


def flops_per_task(s: StepShape) -> float:
    fwd_backbone = (
        2 * s.backbone_params * s.tokens + 2 * s.layers * s.tokens * s.tokens * s.hidden
    )  # + QK^T, AV
    train_backbone = 3 * fwd_backbone
    score = 2 * s.hidden * s.num_items  # one position against every item
    query = 3 * score * s.query_positions  # forward + backward into h and the table
    # Inner step: forward scores + backward into h' (table and backbone frozen), the adapter both ways.
    inner = s.adaptation_steps * s.support_positions * (2 * score + 6 * s.fast_params)
    return float(train_backbone + query + inner)


def matmul_params(module: nn.Module, skip: str = "wte") -> int:
    """Weights of the 2-D (matmul) parameters of ``module``, leaving out those whose name holds ``skip``.
    Counted from DeepSpeed's ``ds_shape`` / ``ds_numel`` where a parameter has them: under ZeRO-3 each rank
    holds an empty 1-D placeholder, so ``numel()`` and ``dim()`` would count nothing (a first GPU run read an
    MFU 14x too low at ZeRO-3 for half ZeRO-2's throughput)."""
    return sum(
        getattr(p, "ds_numel", p.numel())
        for name, p in module.named_parameters()
        if len(getattr(p, "ds_shape", p.shape)) == 2 and skip not in name
    )


def mfu(flops_per_second: float, peak: float = H100_BF16_PEAK) -> float:
    return flops_per_second / peak
