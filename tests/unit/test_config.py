from __future__ import annotations

import os
import re
import subprocess
import sys
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
    with pytest.raises(ValueError, match=r"model\.learn_inner_lr"):  # now meta.algorithm=metasgd
        load_config(None, ["model.learn_inner_lr=true"])


def test_loading_a_config_does_not_import_torch():
    """The config is plain data: `metarec_dist.config` (and the data config it uses) must not pull in torch,
    transformers or the algorithms, so a config can be read, checked and shipped anywhere cheaply."""
    code = (
        "import sys; from metarec_dist.config import load_config; load_config(None, ['meta.inner_lr=0.1']); "
        "print(sorted(m for m in ('torch', 'transformers', 'metarec_dist.meta') if m in sys.modules))"
    )
    root = str(Path(__file__).resolve().parents[2])  # this tree's package, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "overrides,key",
    [
        # named by the --set that chose it (the algorithm is checked after the config is loaded)
        (["meta.algorithm=maml2"], r"^error: --set meta\.algorithm=maml2: unknown 'maml2'"),
        (
            ["meta.algorithm=reptile", "meta.init_query_weight=0.5"],
            r"^error: --set meta\.init_query_weight=0\.5: meta\.algorithm=reptile does not use",
        ),
    ],
)
@pytest.mark.parametrize("command", ["print-config", "train", "submit"])
def test_cli_rejects_a_bad_algorithm_or_option_before_any_work(capsys, tmp_path, command, overrides, key):
    from metarec_dist.cli import main

    args = [command, "--config", "configs/tiny.yaml", *(f"--set={o}" for o in overrides)]
    if command == "submit":  # nothing listens there: reaching the submission would be another error
        args[1:1] = ["--address", "http://127.0.0.1:9", "--working-dir", str(Path.cwd())]
    if command == "train":  # a run folder that must stay absent: no training started
        args.append(f"--set=runtime.storage_path={tmp_path / 'runs'}")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(key, err), err
    assert not (tmp_path / "runs").exists()


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


def test_auto_loss_is_full_up_to_the_threshold_and_sampled_above():
    """``model.loss: auto`` (the default): the full softmax for every catalogue up to ``model.sampled_above``
    items, so existing configs train as before; sampled softmax above; explicit choices are kept."""
    from metarec_dist.config import resolve_loss

    cfg = load_config(None, [])
    assert cfg.model.loss == "auto" and cfg.model.sampled_above == 100_000
    assert resolve_loss(cfg, 100_000).model.loss == "full"
    assert resolve_loss(cfg, 100_001).model.loss == "sampled"
    assert resolve_loss(cfg, 1_000_000).model.loss == "sampled"
    assert cfg.model.loss == "auto"  # resolving returns a new config
    small = load_config(None, ["model.sampled_above=50"])
    assert resolve_loss(small, 200).model.loss == "sampled"
    for kept in ("full", "sampled"):
        assert resolve_loss(load_config(None, [f"model.loss={kept}"]), 1_000_000).model.loss == kept
        assert resolve_loss(load_config(None, [f"model.loss={kept}"]), 10).model.loss == kept
    with pytest.raises(ValueError, match="sampled_above"):
        load_config(None, ["model.sampled_above=0"])


def test_the_trainer_trains_and_records_the_resolved_loss():
    from metarec_dist.data import prepare_data
    from metarec_dist.runtime.context import LocalContext
    from metarec_dist.train.trainer import MetaTrainer

    for above, loss, negatives in ((100, "sampled", 256), (100_000, "full", 0)):
        cfg = load_config("configs/tiny.yaml", ["data.cache=false", f"model.sampled_above={above}"])
        data = prepare_data(cfg.data).user_splits()
        assert data.num_items == 200
        trainer = MetaTrainer(cfg, LocalContext(None), data)
        assert trainer.cfg.model.loss == loss and trainer.model.cfg.loss == loss
        assert trainer.sampler.num_negatives == negatives
        assert trainer.checkpoint_info()["config"]["model"]["loss"] == loss


DEEPSPEED_ONLY = [
    ["runtime.zero_stage=2"],
    ["runtime.zero_stage=3", "runtime.offload_param=true"],
    ["runtime.deepspeed_override=a.json"],
]


@pytest.mark.parametrize("settings", DEEPSPEED_ONLY)
def test_deepspeed_settings_without_deepspeed_are_an_error(settings):
    key = settings[-1].split("=")[0]
    with pytest.raises(ValueError, match=rf"{key}: DeepSpeed settings, but this run does not use DeepSpeed"):
        load_config(None, settings)
    # the same settings with DeepSpeed on (locally or on Ray) are taken
    assert load_config(None, [*settings, "runtime.deepspeed=true"]).runtime.deepspeed
    assert load_config(None, [*settings, "runtime.backend=ray"]).runtime.backend == "ray"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            ["runtime.zero_stage=2", "runtime.offload_param=true"],
            "runtime.offload_param needs runtime.zero_stage=3",
        ),
        (["runtime.offload_param=true"], "runtime.offload_param needs runtime.zero_stage=3 \\(got 0\\)"),
        (["runtime.offload_optimizer=true"], "runtime.offload_optimizer needs runtime.zero_stage 1, 2 or 3"),
    ],
)
def test_an_offload_deepspeed_would_drop_at_that_zero_stage_is_an_error(settings, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [*settings, "runtime.backend=ray"])
    # where DeepSpeed offloads it, it is taken
    assert (
        load_config(None, [*settings, "runtime.zero_stage=3", "runtime.backend=ray"]).runtime.zero_stage == 3
    )


def test_a_missing_or_broken_deepspeed_override_fails_before_any_work(tmp_path, capsys):
    from metarec_dist.cli import main

    broken = tmp_path / "broken.json"
    broken.write_text("[1]")
    for path, said in ((tmp_path / "none.json", "file not found"), (broken, "not a JSON object")):
        settings = ["--set", "runtime.deepspeed=true", "--set", f"runtime.deepspeed_override={path}"]
        assert main(["print-config", *settings]) == 2
        err = capsys.readouterr().err
        assert "runtime.deepspeed_override" in err and said in err


TINY = "configs/tiny.yaml"


def test_a_set_mistake_names_the_set_not_the_config_file(tmp_path, capsys):
    """`--set train.freeze=3` said "configs/tiny.yaml: train.freeze: expected a list": the file was blamed
    for a value it does not hold. A mistake in the file itself still names the file."""
    from metarec_dist.cli import main

    with pytest.raises(ValueError, match=r"^--set train\.freeze=3: expected a list, got 3$"):
        load_config(TINY, ["train.freeze=3"])
    with pytest.raises(ValueError, match=r"^--set runtime\.output_dir=x: unknown config key\(s\)"):
        load_config(TINY, ["runtime.output_dir=x"])
    with pytest.raises(ValueError, match=r"^--set train\.freeze=\[a,a\]: train\.freeze must list distinct"):
        load_config(TINY, ["train.freeze=[a,a]", "optim.lr=0.1"])
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  freeze: 3\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(p))}: train\.freeze: expected a list"):
        load_config(p, ["optim.lr=0.1"])
    assert main(["print-config", "--config", TINY, "--set", "eval.ks=10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --set eval.ks=10: expected a list, got 10") and "tiny.yaml" not in err, err


def test_a_single_string_is_a_one_element_list_of_strings(tmp_path):
    """`--set train.freeze=backbone` (and `freeze: backbone` in a file) mean [backbone]: a list of strings
    cannot mean anything else; a comma-separated string is an error showing the list to write."""
    cfg = load_config(TINY, ["train.freeze=backbone", "model.adapters=bias"])
    assert cfg.train.freeze == ["backbone"] and cfg.model.adapters == ["bias"]
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  freeze: backbone\n")
    assert load_config(p).train.freeze == ["backbone"]
    with pytest.raises(
        ValueError, match=r"got 'backbone,item_emb'; write the list as \[backbone, item_emb\]"
    ):
        load_config(TINY, ["train.freeze=backbone,item_emb"])
    with pytest.raises(ValueError, match=r"^--set model\.adapters=nope: unknown \['nope'\]"):
        load_config(TINY, ["model.adapters=nope"])
