"""train.pretrain whose first stage is another model size: refused before stage 1 trains, naming the
settings (stage 1 trained to the end, then stage 2 failed as ``train.init_from <run>/pretrain``, with advice
to drop a train.init_from the config does not have)."""

from __future__ import annotations

import pytest
import yaml

from metarec_dist.config import load_config
from metarec_dist.errors import UserError
from metarec_dist.train.pretrain import run_pretrain, stage_dir

STAGE1_MODEL = {"hidden_size": 16, "num_heads": 2, "adapter_rank": 2, "max_seq_len": 16}


def run_cfg(tmp_path, stage_model: dict):
    stage1 = tmp_path / "stage1.yaml"
    stage1.write_text(yaml.safe_dump({"model": stage_model, "meta": {"algorithm": "sasrec"}}))
    return load_config(
        None,
        [
            "model.hidden_size=16",
            "model.num_heads=2",
            "model.adapter_rank=2",
            "model.max_seq_len=16",
            "model.adapters=[lowrank,itemlr]",
            "data.format=synthetic",
            f"train.pretrain={stage1}",
            f"runtime.storage_path={tmp_path / 'runs'}",
            "runtime.run_name=two",
        ],
    )


def never(cfg):
    raise AssertionError("the first stage was trained")


@pytest.mark.parametrize(
    "change, said",
    [
        ({"hidden_size": 32}, "model.hidden_size is 32 there and 16 here"),
        ({"num_heads": 4}, "model.num_heads is 4 there and 2 here"),
        ({"max_seq_len": 32}, "model.max_seq_len is 32 there and 16 here"),
    ],
)
def test_a_first_stage_of_another_size_is_refused_before_it_trains(tmp_path, change, said):
    cfg = run_cfg(tmp_path, {**STAGE1_MODEL, **change})
    with pytest.raises(
        UserError, match=rf"train\.pretrain \S+stage1\.yaml: the first stage is another model \({said}\)"
    ):
        run_pretrain(cfg, never)
    assert not stage_dir(cfg).exists()


def test_a_first_stage_of_the_same_size_with_other_adapters_trains(tmp_path):
    cfg = run_cfg(tmp_path, STAGE1_MODEL)  # [lowrank] there, [lowrank, itemlr] here: a new adapter
    with pytest.raises(AssertionError, match="the first stage was trained"):
        run_pretrain(cfg, never)
