"""A model size no run can allocate (an extra 000 in a size) fails at config time in one line naming the
sizes and the --set, not after the data is read in a long allocator traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarec_dist.cli import main
from metarec_dist.config import MAX_BACKBONE_PARAMS, load_config

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.mark.parametrize(
    "setting", ["model.hidden_size=1000000000000", "model.num_layers=10000000000", "model.max_seq_len=10**15"]
)
def test_an_impossible_model_size_is_a_one_line_error_naming_the_set(capsys, setting):
    setting = setting.replace("10**15", str(10**15))
    assert main(["print-config", "--config", TINY, "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --set {setting}: ") and err.count("\n") == 1, err
    assert "parameters" in err and "over the 1e+11 accepted" in err and setting in err.split(": ", 2)[2]


def test_every_shipped_config_is_well_under_the_ceiling_and_the_estimate_is_near_the_names():
    sizes = {p.name: load_config(p).model.backbone_params() for p in ROOT.joinpath("configs").glob("*.yaml")}
    assert max(sizes.values()) * 100 <= MAX_BACKBONE_PARAMS * 1.1
    assert 0.8e9 < sizes["xl-1b.yaml"] < 1.2e9 and 0.8e8 < sizes["base-100m.yaml"] < 1.2e8
    # just under the ceiling is taken: the check is for typos, not a memory estimate
    assert load_config(TINY, ["model.hidden_size=75000", "model.num_layers=1", "model.num_heads=1"])
