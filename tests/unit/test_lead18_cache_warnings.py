"""Session 18: what reading the data warned about is said again when a later run reads the cache entry
(a side table covering few users warned only on the first read; a cache hit was silent)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_data_features import _same_tables_from  # noqa: E402

from metarec_dist.data import prepare_data  # noqa: E402
from metarec_dist.data.pipeline import prepare_shards  # noqa: E402

WARNED = "users.csv: only 1 of the log's 4 users have a row (column 'userId')"


def test_a_cache_hit_repeats_the_first_reads_warnings(tmp_path, caplog):
    config = _same_tables_from("csv", tmp_path)
    config = dataclasses.replace(config, cache=True, cache_dir=str(tmp_path / "cache"))
    path = tmp_path / "side" / "users.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + [f"9{line}" for line in lines[2:]]) + "\n")  # 1 of 4 users
    for read in ("files", "cache", "cache"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="metarec_dist.data"):
            prepare_data(config)
        said = [r.getMessage() for r in caplog.records if WARNED in r.getMessage()]
        assert len(said) == 1, (read, caplog.text)  # once per read, not once per earlier read
        assert ("first read" in said[0]) == (read == "cache")
    caplog.clear()
    with caplog.at_level("WARNING", logger="metarec_dist.data"):
        prepare_shards(config, tmp_path / "scratch")  # the Ray driver's view of the same entry
    assert caplog.text.count(WARNED) == 1
    # Data that warns about nothing repeats nothing.
    path.write_text("\n".join(lines) + "\n")
    caplog.clear()
    with caplog.at_level("WARNING", logger="metarec_dist.data"):
        prepare_data(config), prepare_data(config)
    assert "have a row" not in caplog.text
