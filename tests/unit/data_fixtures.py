"""Small interaction logs written in every supported format, for the data tests.

The same ten interactions in every format, in shuffled file order, with a timestamp tie (user 2)
and a repeated (user, item) pair (user 1, item 10), so every reader must give the same sequences.
"""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from metarec_dist.data import DataConfig

# (user, item, rating, timestamp) in file order.
ROWS = [
    (1, 10, 5.0, 100),
    (2, 20, 3.0, 50),
    (1, 30, 4.0, 90),
    (3, 10, 2.0, 300),
    (2, 10, 5.0, 50),  # same second as (2, 20): file order decides, 20 then 10
    (1, 20, 1.0, 110),
    (3, 40, 5.0, 200),
    (4, 30, 4.0, 400),
    (4, 10, 3.0, 410),
    (1, 10, 2.0, 120),  # user 1 sees item 10 again
]
TITLES = {10: "Ten (1995)", 20: "Twenty, The (1996)", 30: "Thirty (1997)", 40: "Forty (1998)"}
# Items remap 10->1, 20->2, 30->3, 40->4; users 1..4 -> 0..3.
EXPECTED = [[3, 1, 2, 1], [2, 1], [4, 1], [3, 1]]
# First interactions: user 2 at 50, user 1 at 90, user 3 at 200, user 4 at 400 (newest -> test).
EXPECTED_SPLIT = ["train", "train", "valid", "test"]


def cfg(**kwargs) -> DataConfig:
    """A config for the fixtures: one valid and one test user out of four, no cache unless asked."""
    base = {"valid_frac": 0.25, "test_frac": 0.25, "cache": False, "min_history": 1}
    return DataConfig(**{**base, **kwargs})


def _lines(rows, sep: str) -> str:
    return "".join(sep.join(_fmt(v) for v in row) + "\n" for row in rows)


def _fmt(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def write_u_data(folder: Path, rows=ROWS, with_items: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(_lines(rows, "\t"))
    if with_items:  # u.item is Latin-1 with |-separated fields
        text = "".join(f"{i}|{t}|01-Jan-1995||http://x|0|1\n" for i, t in TITLES.items())
        text = text.replace("Forty", "Quarante é")
        (folder / "u.item").write_bytes(text.encode("latin-1"))
    return folder / "u.data"


def write_ratings_dat(folder: Path, rows=ROWS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text(_lines(rows, "::"))
    (folder / "movies.dat").write_bytes(
        "".join(f"{i}::{t}::Drama\n" for i, t in TITLES.items()).encode("latin-1")
    )
    return folder / "ratings.dat"


def write_ratings_csv(folder: Path, rows=ROWS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + _lines(rows, ","))
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f'{i},"{t}",Drama\n' for i, t in TITLES.items())
    )
    return folder / "ratings.csv"


def write_recbole(folder: Path, rows=ROWS, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = name or folder.name
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (folder / f"{name}.inter").write_text(header + _lines(rows, "\t"))
    (folder / f"{name}.item").write_text(
        "item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
        + "".join(f"{i}\t{t}\tDrama\n" for i, t in TITLES.items())
    )
    return folder / f"{name}.inter"


def write_csv(
    path: Path, rows=ROWS, sep: str = ",", header: str = "user_id,item_id,rating,timestamp"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = header.replace(",", sep) + "\n" if header else ""
    path.write_text(head + _lines(rows, sep))
    return path


def write_parquet(path: Path, rows=ROWS) -> Path:
    users, items, ratings, times = zip(*rows, strict=True)
    table = pa.table({"user": list(users), "item": list(items), "rating": list(ratings), "ts": list(times)})
    pq.write_table(table, path)
    return path


def write_jsonl(path: Path, rows=ROWS) -> Path:
    path.write_text(
        "".join(
            json.dumps({"user_id": u, "item_id": i, "rating": r, "timestamp": t}) + "\n"
            for u, i, r, t in rows
        )
    )
    return path


def write_user_item(path: Path, rows=ROWS) -> Path:
    """``user item`` lines in time order (stable on ties), with messy whitespace on purpose."""
    ordered = sorted(rows, key=lambda r: r[3])
    lines = [f"{u}  \t{i} \n" if k % 2 else f"{u} {i}\n" for k, (u, i, _, _) in enumerate(ordered)]
    path.write_text("".join(lines))
    return path


def no_whole_file_reads(monkeypatch) -> None:
    """Small chunks (a character or a line can straddle two) and no reading of a whole file into memory."""
    from metarec_dist.data import textio, titles

    monkeypatch.setattr(textio, "_CHUNK", 7)

    def whole(path):
        raise AssertionError(f"{path} read into memory whole")

    monkeypatch.setattr(textio, "read_bytes", whole, raising=False)  # gone: Parquet is spooled (arrow_source)
    monkeypatch.setattr(titles, "read_bytes", whole, raising=False)  # imported by name before data21


def sequences_by_user(prepared) -> list[list[int]]:
    return [list(items) for items in prepared.users["items"]]


# ------------------------------------------------------------------------------ side information
# Profiles of users 1, 2, 3 and 5 (5 has no interactions; user 4 has no row): user 3's gender is empty.
USER_ROWS = [
    (1, "24", "M", "technician"),
    (2, "53", "F", "other"),
    (3, "33", "", "other"),
    (5, "40", "M", "x"),
]
# Content of items 10, 20, 30 and 50 (50 is never interacted with; item 40 has no row): item 20's year and
# item 30's genres are empty.
ITEM_ROWS = [
    (10, "Ten", "1995", ["Comedy", "Drama"]),
    (20, "Twenty, The", "", ["Drama"]),
    (30, "Thirty", "1997", []),
    (50, "Fifty", "1990", ["Horror"]),
]


def write_recbole_side(folder: Path, name: str | None = None) -> tuple[Path, Path]:
    """``<name>.user`` and ``<name>.item`` (replacing write_recbole's titles-only .item) in RecBole format."""
    folder.mkdir(parents=True, exist_ok=True)
    name = name or folder.name
    user = folder / f"{name}.user"
    user.write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\n"
        + "".join(f"{u}\t{a}\t{g}\t{o}\n" for u, a, g, o in USER_ROWS)
    )
    item = folder / f"{name}.item"
    item.write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(f"{i}\t{t}\t{y}\t{' '.join(c)}\n" for i, t, y, c in ITEM_ROWS)
    )
    return user, item


def write_side_csv(folder: Path) -> tuple[Path, Path]:
    """The same side tables as CSV, with other column names, quoted titles and '|'-separated genres."""
    folder.mkdir(parents=True, exist_ok=True)
    user = folder / "users.csv"
    user.write_text("userId,age,sex,occupation\n" + "".join(f"{u},{a},{g},{o}\n" for u, a, g, o in USER_ROWS))
    item = folder / "items.csv"
    item.write_text(
        "movieId,title,year,genres\n" + "".join(f'{i},"{t}",{y},{"|".join(c)}\n' for i, t, y, c in ITEM_ROWS)
    )
    return user, item


def write_side_parquet(folder: Path) -> tuple[Path, Path]:
    """The same side tables as Parquet: integer ages and years (with a null), genres as a list column."""
    folder.mkdir(parents=True, exist_ok=True)
    users, ages, genders, jobs = zip(*USER_ROWS, strict=True)
    user = folder / "users.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": list(users),
                "age": [int(a) for a in ages],
                "gender": [g or None for g in genders],
                "occupation": list(jobs),
            }
        ),
        user,
    )
    items, titles, years, genres = zip(*ITEM_ROWS, strict=True)
    item = folder / "items.parquet"
    pq.write_table(
        pa.table(
            {
                "item_id": list(items),
                "movie_title": list(titles),
                "release_year": [int(y) if y else None for y in years],
                "class": [list(c) for c in genres],
            }
        ),
        item,
    )
    return user, item


def write_side_jsonl(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    user = folder / "users.jsonl"
    user.write_text(
        "".join(
            json.dumps({"user_id": u, "age": int(a), "gender": g, "occupation": o}) + "\n"
            for u, a, g, o in USER_ROWS
        )
    )
    item = folder / "items.jsonl"
    item.write_text(
        "".join(
            json.dumps({"item_id": i, "movie_title": t, "release_year": int(y) if y else None, "class": c})
            + "\n"
            for i, t, y, c in ITEM_ROWS
        )
    )
    return user, item


def gzipped(path: Path) -> Path:
    """``path`` gzipped beside it (``NAME.gz``)."""
    target = path.with_name(path.name + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    return target


def zipped(path: Path) -> Path:
    """``path`` zipped beside it (``NAME.zip``, one member of its name)."""
    target = path.with_name(path.name + ".zip")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(path, path.name)
    return target
