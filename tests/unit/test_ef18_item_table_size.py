"""The model-size guard is honest about the item table (num_items x hidden_size, which dominates at large
catalogues): the config-time error says it is not counted, and ``check_catalogue`` adds it once the number
of items is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarec_dist.cli import main
from metarec_dist.config import MAX_BACKBONE_PARAMS, load_config

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


def test_the_config_time_error_says_the_item_table_comes_on_top(capsys):
    assert main(["print-config", "--config", TINY, "--set", "model.num_layers=10000000000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "before the item table" in err and "per million items" in err, err


def test_check_catalogue_counts_the_item_table():
    model = load_config(TINY, ["model.hidden_size=4096", "model.num_heads=32"]).model
    small = model.check_catalogue(1000)
    assert small == model.backbone_params() + 1002 * 4096
    # 100 million items at hidden 4096: a backbone of ~0.4e9 accepted at config time, a 4e11 table is not.
    with pytest.raises(ValueError, match=r"model.hidden_size=4096 with the data's 100,000,000 items") as exc:
        model.check_catalogue(100_000_000)
    assert "item table of about 4.1e+11" in str(exc.value) and model.backbone_params() < MAX_BACKBONE_PARAMS
