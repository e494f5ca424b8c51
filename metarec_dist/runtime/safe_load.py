"""Resume and export without unpickling arbitrary objects.

DeepSpeed loads its checkpoint files with ``torch.load(..., weights_only=False)``, which executes whatever
a file tells the unpickler to. Everywhere we let DeepSpeed read a checkpoint we force ``weights_only=True``
and allow only the few plain DeepSpeed/ZeRO types its own files contain; anything else fails with an error
naming the file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def allowed_globals() -> list[Any]:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    allowed: list[Any] = [LossScaler, DynamicLossScaler, ZeroStageEnum, set]
    with contextlib.suppress(ImportError):
        from deepspeed.utils.tensor_fragment import fragment_address

        allowed.append(fragment_address)
    return allowed


def safe_torch_load(path: Any, *args: Any, _load: Any = torch.load, **kwargs: Any) -> Any:
    kwargs["weights_only"] = True
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return _load(path, *args, **kwargs)
    except Exception as exc:  # pickle.UnpicklingError and friends: name the file
        raise ValueError(f"refusing to load checkpoint file {path}: {exc}") from None


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Within the block, every ``torch.load`` (DeepSpeed's included) is a ``weights_only`` load."""
    original = torch.load
    torch.load = lambda path, *a, **kw: safe_torch_load(path, *a, _load=original, **kw)  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.load = original  # type: ignore[assignment]


def install_safe_checkpoint_engine(engine: Any) -> None:
    """Make a DeepSpeed engine's checkpoint loads ``weights_only``."""
    base = type(engine.checkpoint_engine)

    class SafeCheckpointEngine(base):  # type: ignore[misc, valid-type]
        def load(self, path: str, map_location: Any = None) -> Any:
            return safe_torch_load(path, map_location=map_location)

    engine.checkpoint_engine.__class__ = SafeCheckpointEngine
