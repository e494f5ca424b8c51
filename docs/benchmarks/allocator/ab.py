"""A-B of runtime/allocator.py (docs/benchmarks.md, "Blocks above 32 MiB"): runs ``metarec`` with the
arguments given, after ``keep_freed_memory()`` has applied today's settings, and with ``ALLOC_MODE=old``
puts back the previous ones (mmap allowed for blocks above 32 MiB, the heap trimmed above 1 GiB free).

    ALLOC_MODE=old /usr/bin/time python docs/benchmarks/allocator/ab.py train --config ...
    ALLOC_MODE=new /usr/bin/time python docs/benchmarks/allocator/ab.py train --config ...
"""

import ctypes
import os
import sys

import metarec_dist.runtime.allocator as allocator

_apply = allocator.keep_freed_memory


def _settings() -> bool:
    applied = _apply()
    if os.environ.get("ALLOC_MODE", "new") == "old":
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        assert libc.mallopt(-4, 65536) == 1  # M_MMAP_MAX: glibc's default
        assert libc.mallopt(-1, 1 << 30) == 1  # M_TRIM_THRESHOLD: the previous 1 GiB
    return applied


allocator.keep_freed_memory = _settings

from metarec_dist.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
