"""Process settings applied where a training or evaluation process starts: torch's thread count and glibc
malloc's thresholds.

Why the allocator: torch on the CPU has no caching allocator; every tensor is a ``malloc`` and a ``free``.
glibc serves a large block (above a threshold that starts at 128 KiB) with its own ``mmap`` and gives the
pages back on ``free``, and trims the heap top above 128 KiB, so a training step that makes the same
[positions x items] logits, softmax and gradient buffers every step pays for fresh zeroed pages every step.
Measured on Amazon Sports (stage 1 of configs/coldstart.yaml, 18,357 items, one thread, 300 steps, A-B-A-B):
8.4M page faults and 23% of the wall time in the kernel; with the thresholds raised, 0.26M faults and 1.5%,
training steps 1.27x as fast, the whole command 18% shorter, every number the same (docs/benchmarks.md).
The largest threshold glibc allows is 32 MiB, and the GPU recipe's step (configs/coldstart-gpu.yaml: 256-512
tasks x 36 positions x 18,357 items, a logits buffer of 0.7-1.4 GB) still mmapped and faulted in its big
buffers, and freed more than 1 GiB at the heap's top every step: a third of its CPU time in the kernel. So
mmap is switched off for large blocks altogether (``M_MMAP_MAX`` 0: they come from the heap and are reused)
and the heap is never trimmed: at 512 tasks, 1.2-1.7x the tasks per second, 0.9M page faults instead of 27M,
peak resident memory 3.7 GB instead of 3.0 (the heap's fragments), the same numbers (docs/benchmarks.md).
PyTorch's CPU tuning guide gives the same advice by another road (preload jemalloc or tcmalloc); ``mallopt``
needs no extra library and no restart. The cost: memory freed after a peak stays with the process (its peak
resident size is unchanged).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

log = logging.getLogger(__name__)

# mallopt parameter numbers (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# The main thread's blocks of every size come from the heap (no mmapped blocks at all) and are reused; the
# heap is never trimmed (-1, mallopt(3)) and grows 64 MiB at a time. Threads' arenas (a Ray Train worker's
# loop runs in a thread) cannot grow past 64 MiB heaps and mmap larger blocks whatever the setting: for
# them, blocks up to 32 MiB (glibc's largest allowed mmap threshold on 64-bit) come from their heaps.
MMAP_THRESHOLD = 32 * 1024 * 1024
MMAP_MAX = 0
TRIM_THRESHOLD = -1
TOP_PAD = 64 * 1024 * 1024

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (idempotent). False where the C library is
    not glibc (macOS, musl): nothing is changed there."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
        gnu = getattr(libc, "gnu_get_libc_version", None)
    except OSError:
        mallopt = gnu = None
    if mallopt is None or gnu is None:  # mallopt exists outside glibc too, with other parameter numbers
        log.debug("not glibc: the allocator's thresholds are left as they are")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_MMAP_MAX, MMAP_MAX),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_TOP_PAD, TOP_PAD),
        )
    )
    if not ok:
        log.warning("mallopt refused a threshold; the allocator may still return memory to the OS early")
    _applied = ok
    return ok


def apply_process_settings(runtime: Any) -> None:
    """``runtime`` (a ``RuntimeConfig``): ``torch_threads`` (0 leaves torch's default) and
    ``keep_freed_memory``, for the process that is about to train or evaluate."""
    import torch

    if runtime.torch_threads:
        torch.set_num_threads(runtime.torch_threads)
    if runtime.keep_freed_memory:
        keep_freed_memory()
