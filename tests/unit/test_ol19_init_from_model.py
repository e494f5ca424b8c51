"""train.init_from from a run of another model size: one line naming the model settings and the values to
give, before any data is read or Ray started (it named a tensor, after the data; another model.num_heads
loaded silently, the same tensors split into other heads)."""

from __future__ import annotations

import re

import pytest

from metarec_dist.checkpoint import export
from metarec_dist.config import with_overrides
from metarec_dist.errors import UserError
from metarec_dist.runtime.context import LocalContext
from metarec_dist.train.trainer import MetaTrainer


@pytest.fixture
def old_run(tiny_cfg, synth_data, tmp_path):
    """A finished 2-step run (hidden_size 16, 2 heads, rank 2) and an export of it."""
    cfg = with_overrides(tiny_cfg, ["train.meta_steps=2"])
    out = MetaTrainer(cfg, LocalContext(tmp_path / "old"), synth_data).fit()
    export(out["checkpoint"], tmp_path / "export")
    return tmp_path / "old", tmp_path / "export"


def test_another_head_count_is_refused_naming_it(tiny_cfg, synth_data, old_run):
    run_dir, _ = old_run
    cfg = with_overrides(tiny_cfg, [f"train.init_from={run_dir}", "model.num_heads=4"])
    with pytest.raises(UserError, match=r"model\.num_heads is 2 there and 4 here.*--set model\.num_heads=2"):
        MetaTrainer(cfg, LocalContext(None), synth_data)


def test_another_size_is_named_with_the_tensor_that_differs(tiny_cfg, synth_data, old_run):
    run_dir, _ = old_run
    cfg = with_overrides(tiny_cfg, [f"train.init_from={run_dir}", "model.hidden_size=32"])
    with pytest.raises(UserError) as err:
        MetaTrainer(cfg, LocalContext(None), synth_data)
    text = str(err.value)
    assert "model.hidden_size is 16 there and 32 here" in text
    assert "intermediate_size" not in text  # derived from hidden_size on both sides: not a setting to give
    assert "; parameter " in text and "--set model.hidden_size=16" in text


@pytest.mark.parametrize("source", ["run", "export"])
@pytest.mark.parametrize(
    "change, said",
    [
        ("model.hidden_size=32", "model.hidden_size is 16 there and 32 here"),
        ("model.max_seq_len=64", "model.max_seq_len is 16 there and 64 here"),
        ("model.adapter_rank=4", "model.adapter_rank is 2 there and 4 here"),
        ("model.intermediate_size=32", "model.intermediate_size is 64 there and 32 here"),
    ],
)
def test_metarec_train_names_another_model_before_any_work(
    tiny_cfg, old_run, monkeypatch, source, change, said
):
    from metarec_dist.train import launch

    def trained(cfg, verbose=False):
        raise AssertionError("trained before train.init_from's model was checked")

    monkeypatch.setattr(launch, "train_one", trained)
    path = dict(zip(["run", "export"], old_run, strict=True))[source]
    with pytest.raises(UserError, match=f"train.init_from {path}: that run is another model \\({said}\\)"):
        launch.train(with_overrides(tiny_cfg, [f"train.init_from={path}", change]))
    # The same model with other training settings (algorithm, adapters added after the source's) is fine.
    same = with_overrides(
        tiny_cfg, [f"train.init_from={path}", "model.adapters=[lowrank,bias]", "meta.algorithm=sasrec"]
    )
    with pytest.raises(AssertionError, match="trained before"):
        launch.train(same)


def test_a_checkpoint_pruned_before_its_config_is_read_is_left_to_init_from(tmp_path):
    """A source still training can prune the checkpoint check_source found before its config is read: the
    early check then has nothing to compare (init_from reads the newest one), not a 'damaged' error."""
    from metarec_dist.train.init_from import source_config

    assert source_config(tmp_path, tmp_path / "checkpoints" / "step_000002") == {}


@pytest.mark.parametrize("adapters, given", [("[itemlr]", "[lowrank,itemlr]"), ("[film]", "[lowrank,film]")])
def test_adapters_that_do_not_start_with_the_sources_are_named_before_any_work(
    tiny_cfg, old_run, monkeypatch, adapters, given
):
    """[lowrank] (rank 2, hidden 16: 64 fast weights) into [film] (2 x hidden: 32) failed after the data on
    fast_init's shape; a same-sized pair would have loaded one adapter's weights into another."""
    from metarec_dist.train import launch

    monkeypatch.setattr(launch, "train_one", lambda cfg, verbose=False: {"trained": True})
    run_dir, _ = old_run
    cfg = with_overrides(tiny_cfg, [f"train.init_from={run_dir}", f"model.adapters={adapters}"])
    said = rf"fast weights are model.adapters \['lowrank'\], .*--set model.adapters={re.escape(given)}\)"
    with pytest.raises(UserError, match=said):
        launch.train(cfg)
    assert launch.train(with_overrides(cfg, [f"model.adapters={given}"])) == {"trained": True}
