"""python measure.py PATH [FORMAT] [ENCODING]: read the log as prepare_data reads it (readers.read_layout)
and print peak memory up to the end of the read (max RSS; Arrow's pool peak; with TRACE=1 the Python heap
peak by tracemalloc), then a digest of the arrays (and titles) read, to check results stay identical."""

from __future__ import annotations

import hashlib
import os
import resource
import sys
import tracemalloc
from pathlib import Path

if os.environ.get("TRACE"):
    tracemalloc.start()

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from metarec_dist.data.config import DataConfig  # noqa: E402
from metarec_dist.data.layout import _generic, detect  # noqa: E402
from metarec_dist.data.readers import read_layout  # noqa: E402


def main() -> None:
    path = Path(sys.argv[1])
    fmt = sys.argv[2] if len(sys.argv) > 2 else "auto"
    cfg = DataConfig(path=str(path), format=fmt, encoding=sys.argv[3] if len(sys.argv) > 3 else "utf-8")
    layout = detect(path) if fmt == "auto" else _generic(path, fmt)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
    raw = read_layout(layout, cfg, ratings=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
    py_peak = tracemalloc.get_traced_memory()[1] >> 20 if tracemalloc.is_tracing() else -1
    tracemalloc.stop()
    h = hashlib.sha256()
    for a in (raw.user, raw.item, raw.time, raw.rating):
        if a is not None:
            h.update(np.asarray(a).tobytes() if isinstance(a, np.ndarray) else str(a.to_pylist()).encode())
    if raw.titles:
        h.update(repr(sorted(raw.titles.items())).encode())
    pool = pa.default_memory_pool().max_memory() >> 20
    print(
        layout.kind,
        len(raw),
        len(raw.titles or {}),
        h.hexdigest()[:16],
        f"rss_before_read_mb={base_rss} peak_rss_read_mb={rss}",
        f"arrow_pool_peak_mb={pool} python_heap_peak_mb={py_peak}",
    )


if __name__ == "__main__":
    main()
