from __future__ import annotations

from pathlib import Path

import pytest

from metarec_dist.config import config_to_yaml, load_config

CONFIGS = sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml"))


def test_unknown_key_fails_and_names_it(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  hidden_sise: 32\n")
    with pytest.raises(ValueError, match=r"model\.hidden_sise"):
        load_config(p)


def test_unknown_section_and_override_are_errors():
    with pytest.raises(ValueError, match="modle"):
        load_config(None, ["modle.hidden_size=3"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        load_config(None, ["model.hidden_size"])


def test_wrong_type_names_the_key():
    with pytest.raises(ValueError, match=r"model\.num_layers: expected int"):
        load_config(None, ["model.num_layers=two"])
    with pytest.raises(ValueError, match=r"runtime\.use_gpu: expected bool"):
        load_config(None, ["runtime.use_gpu=3"])
    with pytest.raises(ValueError, match=r"model\.arch: 'bert' is not one of"):
        load_config(None, ["model.arch=bert"])


def test_impossible_combinations_are_errors():
    with pytest.raises(ValueError, match="meta_batch_size"):
        load_config(None, ["meta.meta_batch_size=10", "runtime.num_workers=4"])
    with pytest.raises(ValueError, match="max_seq_len"):
        load_config(None, ["tasks.support_max=60", "model.max_seq_len=64"])
    with pytest.raises(ValueError, match="divisible"):
        load_config(None, ["model.hidden_size=30", "model.num_heads=4"])
    with pytest.raises(ValueError, match="meta.algorithm"):
        load_config(None, ["meta.algorithm=maml2"])
    for algorithm in ("reptile", "none", "sasrec"):  # options only FOMAML's outer loss acts on
        with pytest.raises(ValueError, match=rf"model\.learn_inner_lr.*meta\.algorithm={algorithm}"):
            load_config(None, [f"meta.algorithm={algorithm}", "model.learn_inner_lr=true"])
        with pytest.raises(ValueError, match=r"meta\.init_query_weight"):
            load_config(None, [f"meta.algorithm={algorithm}", "meta.init_query_weight=0.5"])
    load_config(None, ["model.learn_inner_lr=true", "meta.init_query_weight=0.5"])  # fomaml: fine


def test_overrides_apply_in_order_and_parse_yaml_values():
    cfg = load_config(
        None, ["optim.lr=1e-3", "eval.shots=[1,2]", "optim.lr=0.5", "model.intermediate_size=null"]
    )
    assert cfg.optim.lr == 0.5 and cfg.eval.shots == [1, 2] and cfg.model.intermediate_size is None
    assert isinstance(load_config(None, ["optim.lr=3"]).optim.lr, float)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    cfg = load_config(path)
    again = tmp_path / "again.yaml"
    again.write_text(config_to_yaml(cfg))
    assert load_config(again) == cfg
