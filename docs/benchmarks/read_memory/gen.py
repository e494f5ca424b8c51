"""Build ~200 MB logs of each kind that streams under big/: a `::`-separated ratings.dat, a user_item file,
a CSV log and its gzip and zip copies, and a ~250 MB movies.dat beside a small ratings.dat (titles)."""

from __future__ import annotations

import gzip
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

OUT = Path("big")
RNG = np.random.default_rng(0)


def lines(n: int, fmt: str) -> bytes:
    u, i = RNG.integers(1, 200_000, n), RNG.integers(1, 50_000, n)
    r, t = RNG.integers(1, 6, n), RNG.integers(900_000_000, 1_600_000_000, n)
    return "".join(
        fmt.format(*x) for x in zip(u.tolist(), i.tolist(), r.tolist(), t.tolist(), strict=True)
    ).encode()


def write(path: Path, make: Callable[[int], bytes], target: float = 200e6, step: int = 1_000_000) -> None:
    with open(path, "wb") as f:
        size = 0
        while size < target:
            chunk = make(step)
            f.write(chunk)
            size += len(chunk)


def main() -> None:
    (OUT / "ml1m").mkdir(parents=True, exist_ok=True)
    write(OUT / "ml1m/ratings.dat", lambda n: lines(n, "{}::{}::{}::{}\n"))
    write(OUT / "user_item.txt", lambda n: lines(n, "{} {}\n"))
    write(OUT / "log.csv", lambda n: lines(n, "{},{},{},{}\n"))
    data = b"user_id,item_id,rating,timestamp\n" + (OUT / "log.csv").read_bytes()
    (OUT / "log.csv").write_bytes(data)
    with gzip.open(OUT / "log.csv.gz", "wb", compresslevel=1) as f:
        f.write(data)
    with zipfile.ZipFile(OUT / "log.csv.zip", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("log.csv", data)
    del data
    (OUT / "titles").mkdir(exist_ok=True)
    n = 3_500_000
    with open(OUT / "titles/movies.dat", "wb") as f:
        for s in range(0, n, 500_000):
            rows = range(s + 1, min(n, s + 500_000) + 1)
            f.write(
                "".join(
                    f"{k}::Some Film Title Number {k} With Words (19{k % 100:02d})::Drama|Comedy\n"
                    for k in rows
                ).encode()
            )
    ratings = b"".join(
        b"%d::%d::4::%d\n" % (u, i, 1000 + u * 10 + i) for u in range(1, 300) for i in range(1, 30)
    )
    (OUT / "titles/ratings.dat").write_bytes(ratings)


if __name__ == "__main__":
    main()
