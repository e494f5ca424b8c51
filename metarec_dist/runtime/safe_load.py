"""Resume without unpickling arbitrary objects.

DeepSpeed's checkpoint engine calls ``torch.load(..., weights_only=False)``, which executes whatever a
checkpoint file tells the unpickler to. We swap in a checkpoint engine that loads with
``weights_only=True`` and allows only the handful of plain DeepSpeed/ZeRO types its own files contain;
anything else fails with an error naming the file.
"""

from __future__ import annotations

from typing import Any

import torch


def _allowed_globals() -> list[Any]:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    allowed: list[Any] = [LossScaler, DynamicLossScaler, ZeroStageEnum, set]
    try:
        from deepspeed.utils.tensor_fragment import fragment_address

        allowed.append(fragment_address)
    except ImportError:
        pass
    return allowed


def install_safe_checkpoint_engine(engine: Any) -> None:
    base = type(engine.checkpoint_engine)
    allowed = _allowed_globals()

    class SafeCheckpointEngine(base):  # type: ignore[misc, valid-type]
        def load(self, path: str, map_location: Any = None) -> Any:
            try:
                with torch.serialization.safe_globals(allowed):
                    return torch.load(path, map_location=map_location, weights_only=True)
            except Exception as exc:  # pickle.UnpicklingError and friends: name the file
                raise ValueError(f"refusing to load checkpoint file {path}: {exc}") from None

    engine.checkpoint_engine.__class__ = SafeCheckpointEngine
