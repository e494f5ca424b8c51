"""Known-harmless library chatter, silenced precisely: each filter names the exact message it drops, so
every other warning or error (and every exception) still reaches the user.

- ``zero_to_fp32_quietly``: DeepSpeed's ZeRO checkpoint consolidation ``print``s its progress ("Processing
  zero checkpoint", "Reconstructed ... fp32 state dict") to stdout, where ``metarec recommend`` writes its
  answer, shows tqdm bars ("Gathering sharded weights") and, on a CPU-only machine, warns that it set the
  accelerator to CPU (consolidation only reads files on the CPU anyway).
- ``filter_training_chatter``: the per-step warnings of a ZeRO training run (see its docstring).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

DEEPSPEED_LOGGER = "DeepSpeed"
# Logged once when DeepSpeed finds no GPU: it then runs on the CPU, which is what consolidation does anyway.
CPU_ACCELERATOR = re.compile(r"Setting accelerator to CPU\. If you have GPU or other accelerator")
# ZeRO-3's backward hooks look for tensors in each module's output; the meta-learner returns a
# ``MetaStepOutput`` dataclass, so DeepSpeed warns (once) that hooks on its outputs may not fire. Harmless:
# the meta-learner's own parameters are registered as external parameters (``register_external_parameter``,
# see deepspeed_engine.py), so they are gathered for the whole meta-loss and its backward;
# tests/integration/test_distributed.py checks ZeRO-3 ends with the weights a single process trains.
UNKNOWN_OUTPUT_TYPE = re.compile(
    r"A module has unknown inputs or outputs type \(<class '[\w.]*MetaStepOutput'>\)"
)
# DeepSpeed's torch backend calls torch.distributed.all_gather_into_tensor / reduce_scatter_tensor, which
# torch deprecated in favour of the *_single functions they now simply forward to (same collective, same
# result); torch warns on every call, i.e. every ZeRO step. Nothing a user can change: DeepSpeed's to update.
DEPRECATED_COLLECTIVE = r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated"
COLLECTIVE_MODULE = r"torch\.distributed\b"  # the warning is attributed to torch's own c10d wrapper


class DropMessages(logging.Filter):
    """A logging filter dropping the records whose message matches ``pattern``; every other one passes."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


@contextlib.contextmanager
def dropped_deepspeed_messages(pattern: re.Pattern[str]) -> Iterator[None]:
    """DeepSpeed's logger drops messages matching ``pattern`` inside the block (it need not exist yet:
    DeepSpeed configures the same ``logging.getLogger`` object when it is first imported)."""
    logger = logging.getLogger(DEEPSPEED_LOGGER)
    drop = DropMessages(pattern)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def zero_to_fp32_quietly(engine_dir: str, tag: str) -> dict[str, Any]:
    """DeepSpeed's ``get_fp32_state_dict_from_zero_checkpoint`` without its progress output: its ``print``s
    go to a discarded buffer and its tqdm bars are off, for this call only. DeepSpeed's logger (warnings and
    errors) and Python warnings still reach the user; exceptions propagate unchanged."""
    with dropped_deepspeed_messages(CPU_ACCELERATOR):
        # Imported (and the accelerator detected) before stdout is redirected: DeepSpeed's log handler keeps
        # the sys.stdout of its first import, which must not be the discarded buffer.
        from deepspeed.accelerator import get_accelerator
        from deepspeed.utils import zero_to_fp32

        get_accelerator()
        with _tqdm_off(zero_to_fp32), contextlib.redirect_stdout(io.StringIO()):
            return zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(engine_dir, tag=tag)


@contextlib.contextmanager
def _tqdm_off(module: Any) -> Iterator[None]:
    """``module.tqdm`` (a module-level ``from tqdm import tqdm``) made silent inside the block."""
    bar: Callable[..., Any] | None = getattr(module, "tqdm", None)
    if bar is None:
        yield
        return
    module.tqdm = partial(bar, disable=True)
    try:
        yield
    finally:
        module.tqdm = bar


def filter_training_chatter() -> None:
    """Drop the known-harmless per-step warnings of a DeepSpeed ZeRO run (process-wide, idempotent): torch's
    deprecation of the collectives DeepSpeed calls, and DeepSpeed's note on the meta-learner's output type.
    The patterns match those messages only; every other warning is still shown."""
    warnings.filterwarnings(
        "ignore", message=DEPRECATED_COLLECTIVE, category=FutureWarning, module=COLLECTIVE_MODULE
    )
    logger = logging.getLogger(DEEPSPEED_LOGGER)
    if not any(isinstance(f, DropMessages) and f.pattern is UNKNOWN_OUTPUT_TYPE for f in logger.filters):
        logger.addFilter(DropMessages(UNKNOWN_OUTPUT_TYPE))
