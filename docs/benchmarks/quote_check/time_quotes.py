"""Time `prepare_data` of a quoted CSV log with and without the check for a quote left open (textio's
`_check_no_unclosed_quote`), alternating, five times each, in one process.

    python docs/benchmarks/quote_check/time_quotes.py [ROWS]   # writes /tmp/quoted-log.csv first
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from metarec_dist.config import load_config
from metarec_dist.data import prepare_data, textio


def write_log(path: Path, rows: int) -> None:
    rng = random.Random(0)
    with path.open("w") as f:
        f.write("user_id,item_id,timestamp,note\n")
        for i in range(rows):  # every row has a quoted note: two quotes a row
            f.write(f'{rng.randrange(50000)},{rng.randrange(20000)},{1000 + i},"n{i % 7}"\n')


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    path = Path("/tmp/quoted-log.csv")
    write_log(path, rows)
    settings = [f"data.path={path}", "data.format=csv", "data.min_history=1", "data.cache=false"]
    cfg = load_config(None, settings)
    check = textio.TextFile._check_no_unclosed_quote
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(5):
        for mode in times:
            textio.TextFile._check_no_unclosed_quote = check if mode == "with" else (lambda self, rows: None)
            start = time.perf_counter()
            prepare_data(cfg.data)
            times[mode].append(round(time.perf_counter() - start, 2))
    print(f"{path.stat().st_size / 1e6:.1f} MB, {rows:,} rows: {times}")


if __name__ == "__main__":
    main()
