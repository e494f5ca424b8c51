"""Issue 12 item 7: a data error right after pyarrow's CSV read exits with status 2, every time.

Arrow used to free its CSV reader on a pool thread after ``read_csv`` returned; the reader held a Python
callback, and freeing it while Python was exiting aborted the process ("terminate called without an active
exception", exit 134) in about one run in four. One run cannot show a race: 20 subprocesses do.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPEATS = 20
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def logs(tmp_path) -> dict[str, Path]:
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("uid,iid,ts\n")
    float_ids = tmp_path / "float_ids.csv"
    float_ids.write_text("uid,iid,ts\n1,2.5,3\n2,3,4\n")
    packed = tmp_path / "float_ids.csv.gz"  # read through Arrow's gzip stream
    packed.write_bytes(gzip.compress(b"uid,iid,ts\n1,2,3\n2,3.5,4\n"))
    return {"only a header line": header_only, "2.5": float_ids, "3.5": packed}


def _stats(path: Path, cache: Path) -> subprocess.CompletedProcess:
    mapping = ["--set", "data.user_col=uid", "--set", "data.item_col=iid", "--set", "data.time_col=ts"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "METAREC_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "metarec_dist.cli", "data", "stats", "--path", str(path), "--format", "csv"]
    return subprocess.run([*cmd, *mapping], capture_output=True, text=True, env=env, timeout=300)


def test_a_data_error_after_the_csv_read_exits_cleanly_every_time(logs, tmp_path):
    cases = [list(logs.items())[i % len(logs)] for i in range(REPEATS)]
    with ThreadPoolExecutor(2) as pool:  # two at a time: the race shows more on a busy machine
        runs = list(pool.map(lambda case: (case[0], _stats(case[1], tmp_path / "cache")), cases))
    bad = [(r.returncode, r.stderr[-300:]) for _, r in runs if r.returncode != 2]
    assert not bad, f"{len(bad)} of {REPEATS} runs did not exit with status 2: {bad[:3]}"
    for expected, r in runs:
        assert r.stderr.startswith("error: ") and expected in r.stderr and "terminate" not in r.stderr


@pytest.mark.parametrize(
    "text, settings, packed",
    [
        ("uid,iid,ts\n1,2,3\n", [], False),
        ("uid::iid::ts\n1::2::3\n", ["data.sep='::'"], False),  # rewritten into a temporary copy: a path
        ("uid,iid,ts\n1,2\n", [], False),  # a bad row: the error path
        ("uid,iid,ts\n1,2,3\n", [], True),  # gzip'd: Arrow's own decompressing stream
    ],
    ids=["file", "rewritten", "bad-row", "gzip"],
)
def test_the_csv_reader_is_given_no_python_objects(tmp_path, monkeypatch, text, settings, packed):
    """The cause, checked directly: what Arrow frees on its pool threads must not need the GIL."""
    import pyarrow as pa
    import pyarrow.csv as pv

    from metarec_dist.config import load_config
    from metarec_dist.data import DataError, prepare_data

    seen = []
    real = pv.read_csv

    def spy(source, read_options=None, parse_options=None, convert_options=None, **kw):
        seen.append((source, parse_options.invalid_row_handler))
        return real(
            source, read_options=read_options, parse_options=parse_options, convert_options=convert_options
        )

    monkeypatch.setattr(pv, "read_csv", spy)
    path = tmp_path / "log.csv"
    path.write_bytes(gzip.compress(text.encode()) if packed else text.encode())
    mapping = ["data.user_col=uid", "data.item_col=iid", "data.time_col=ts", "data.cache=false"]
    cfg = load_config(None, ["data.format=csv", f"data.path={path}", *mapping, *settings])
    with pytest.raises(DataError):  # one user with one interaction, or the bad row
        prepare_data(cfg.data)
    assert seen and all(handler is None for _, handler in seen)
    # Arrow's own objects (no Python file object inside): a path, Arrow memory, Arrow's gzip stream
    assert all(isinstance(src, (str, pa.BufferReader, pa.CompressedInputStream)) for src, _ in seen)
