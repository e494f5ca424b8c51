"""`metarec data stats --help` says what it reads without --path, and which formats --format takes."""

from __future__ import annotations

import pytest

from metarec_dist.cli import main


def test_data_stats_help_names_the_formats_and_the_default_data(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "stats", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps at the terminal's width
    assert "Without --config or --path: the built-in default, synthetic data." in text
    assert "csv, tsv, parquet, jsonl, user_item, recbole, movielens" in text
