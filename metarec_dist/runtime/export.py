"""Consolidate an engine checkpoint (DeepSpeed ZeRO shards or local files) into one plain state dict.

Uses DeepSpeed's own ``zero_to_fp32`` reconstruction for ZeRO-1/2/3 (it knows every partitioning layout);
ZeRO-0 and local checkpoints already hold the full weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from metarec_dist.runtime.safe_load import safe_torch_load, weights_only_loads

TAG = "state"


def consolidated_state_dict(engine_dir: Path) -> dict[str, torch.Tensor]:
    """The meta-learner's full fp32 state dict, keys as in ``MetaLearner`` (``model.`` prefix)."""
    folder = Path(engine_dir) / TAG
    local = folder / "model.safetensors"
    if local.is_file():
        from safetensors.torch import load_file

        return load_file(str(local))
    if any(folder.glob("*optim_states.pt")):
        from metarec_dist.runtime.quiet import zero_to_fp32_quietly

        with weights_only_loads():
            state = zero_to_fp32_quietly(str(engine_dir), TAG)  # without DeepSpeed's progress prints
        return _float(state)
    model_file = folder / "mp_rank_00_model_states.pt"
    if not model_file.is_file():
        raise ValueError(f"{engine_dir}: no model weights found (expected {model_file.name} or ZeRO shards)")
    return _float(safe_torch_load(model_file, map_location="cpu")["module"])


def _float(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating-point tensors in fp32; integer buffers (the per-item feature ids) as they are."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
