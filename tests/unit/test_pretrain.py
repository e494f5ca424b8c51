"""train.pretrain: one command trains a first stage into <run>/pretrain and then the run from its weights,
exactly as the two runs by hand would; a finished first stage is reused, an interrupted one resumes, one of
other settings is refused and left in place; the config mistakes are UserErrors naming the file."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from metarec_dist import checkpoint as ckpt
from metarec_dist.cli import main as cli_main
from metarec_dist.config import load_config, with_overrides
from metarec_dist.errors import UserError
from metarec_dist.eval.loading import load_model
from metarec_dist.train.launch import train
from metarec_dist.train.pretrain import (
    PRETRAIN_DIR,
    finished_run,
    pretrain_config,
    run_pretrain,
    same_run,
    stage_dir,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trained import TINY_MODEL  # noqa: E402

DATA = ["data.format=synthetic", "data.synthetic_users=60", "data.synthetic_items=30", "data.cache=false"]
# The first stage: a tiny `sasrec`, checkpointed every step so that a test can cut it short.
STAGE1 = {
    "meta": {"algorithm": "sasrec"},
    "train": {"meta_steps": 4, "log_every": 1},
    "checkpoint": {"every": 1, "keep": 10},
    "data": {"format": "movielens", "name": "ignored"},  # the first stage takes the run's data
}
# The second stage, as configs/coldstart.yaml: a new adapter, the backbone frozen.
STAGE2 = [
    "train.meta_steps=3",
    "train.log_every=1",
    "model.adapters=[lowrank,itemlr]",
    "train.freeze=[backbone]",
]


def write_yaml(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree))
    return path


def stage1_file(tmp_path: Path, **changes: dict) -> Path:
    """The first stage's file (TINY_MODEL's settings), with ``changes`` to its sections."""
    tree = {
        **STAGE1,
        "model": {"hidden_size": 16, "num_heads": 2, "adapter_rank": 2, "max_seq_len": 16},
        "tasks": {"support_max": 5, "query_size": 3},
        "meta": {**STAGE1["meta"], "meta_batch_size": 8},
        **changes,
    }
    return write_yaml(tmp_path / "stage1.yaml", tree)


def two_stage_cfg(tmp_path: Path, stage1: Path, *extra: str):
    return load_config(
        None,
        [
            *TINY_MODEL,
            *DATA,
            *STAGE2,
            f"train.pretrain={stage1}",
            f"runtime.storage_path={tmp_path / 'runs'}",
            "runtime.run_name=two",
            *extra,
        ],
    )


def weights(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    return load_model(checkpoint).model.state_dict()


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def never(cfg):
    raise AssertionError(f"the first stage was trained again ({cfg.runtime.run_name})")


@pytest.fixture
def two_stage(tmp_path):
    """A finished two-stage run: (its config, its result)."""
    cfg = two_stage_cfg(tmp_path, stage1_file(tmp_path))
    return cfg, train(cfg)


def test_two_stages_equal_the_first_stage_then_init_from_by_hand(two_stage, tmp_path):
    cfg, result = two_stage
    assert result["pretrain_path"] == str(tmp_path / "runs" / "two" / PRETRAIN_DIR)
    # By hand: the first stage's file with the run's data and seed, then the run with init_from at it.
    alone = load_config(
        tmp_path / "stage1.yaml",
        [*DATA, "data.name=null", f"runtime.storage_path={tmp_path / 'hand'}", "runtime.run_name=sasrec"],
    )
    first = train(alone)
    assert_same(weights(first["checkpoint"]), weights(stage_dir(cfg)))
    second = train(
        with_overrides(
            cfg,
            ["train.pretrain=null", f"train.init_from={tmp_path / 'hand' / 'sasrec'}", "runtime.run_name=b"],
        )
    )
    assert_same(weights(result["checkpoint"]), weights(second["checkpoint"]))
    # The test can fail: the second stage moved the weights the first stage left.
    assert not torch.equal(
        weights(result["checkpoint"])["item_emb.weight"], weights(first["checkpoint"])["item_emb.weight"]
    )
    # The run's own config records the first stage's file, and no init_from.
    saved = load_model(result["checkpoint"]).cfg
    assert saved.train.pretrain == str(tmp_path / "stage1.yaml") and saved.train.init_from is None


def test_a_finished_first_stage_is_reused(two_stage, tmp_path):
    cfg, result = two_stage
    stage = stage_dir(cfg)
    before = {p: p.stat().st_mtime_ns for p in stage.rglob("*") if p.is_file()}
    assert run_pretrain(cfg, never) == stage  # finished, same settings: nothing trained
    shutil.rmtree(Path(result["run_path"]) / "checkpoints")  # the second stage again, from scratch
    again = train(cfg)
    assert {p: p.stat().st_mtime_ns for p in stage.rglob("*") if p.is_file()} == before
    assert_same(weights(again["checkpoint"]), weights(result["checkpoint"]))


def test_an_interrupted_first_stage_resumes(two_stage, tmp_path, caplog):
    cfg, result = two_stage
    stage = stage_dir(cfg)
    for step in (3, 4):  # cut the first stage short after step 2; the second stage never ran
        shutil.rmtree(ckpt.step_dir(stage, step))
    shutil.rmtree(Path(result["run_path"]) / "checkpoints")
    assert finished_run(stage, pretrain_config(cfg)) is None
    with caplog.at_level(logging.INFO, logger="metarec"):
        again = train(cfg)
    assert "resumed from" in caplog.text and "at meta-step 2" in caplog.text
    assert_same(weights(again["checkpoint"]), weights(result["checkpoint"]))


def test_a_first_stage_of_other_settings_is_an_error_and_left_in_place(two_stage, tmp_path):
    cfg, _ = two_stage
    stage = stage_dir(cfg)
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    stage1_file(tmp_path, optim={"lr": 0.01})  # the first stage's file changed since
    with pytest.raises(UserError, match=r"other settings \(optim\.lr: 0\.001 -> 0\.01\).*not overwritten"):
        train(cfg)
    assert sorted(p for p in stage.rglob("*") if p.is_file()) == files
    # A seed is a setting of the first stage too (it takes the run's).
    with pytest.raises(UserError, match=r"train\.seed: 0 -> 1"):
        run_pretrain(
            with_overrides(two_stage_cfg(tmp_path, tmp_path / "stage1.yaml"), ["train.seed=1"]), never
        )


def test_the_first_stage_takes_the_runs_data_seed_runtime_and_logging(tmp_path):
    cfg = two_stage_cfg(
        tmp_path, stage1_file(tmp_path), "train.seed=5", "runtime.torch_threads=1", "eval.n_boot=7"
    )
    stage = pretrain_config(cfg)
    assert stage.data == cfg.data and stage.logging == cfg.logging and stage.eval == cfg.eval
    assert stage.train.seed == 5 and stage.runtime.torch_threads == 1
    assert (
        Path(stage.runtime.storage_path) / stage.runtime.run_name == tmp_path / "runs" / "two" / PRETRAIN_DIR
    )
    assert stage.meta.algorithm == "sasrec" and stage.train.meta_steps == 4 and stage.checkpoint.every == 1
    assert stage.train.pretrain is None and stage.train.freeze == []
    # The same run placed elsewhere is the same run (reproduce evaluates the baseline from it).
    elsewhere = with_overrides(stage, ["runtime.run_name=sasrec-s5", f"runtime.storage_path={tmp_path}"])
    assert same_run(stage, elsewhere) and not same_run(stage, with_overrides(elsewhere, ["optim.lr=0.5"]))


def test_a_relative_path_is_found_next_to_the_config_then_in_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    stage1 = stage1_file(tmp_path)
    shutil.copy(stage1, tmp_path / "conf" / "stage1.yaml")
    run = write_yaml(tmp_path / "conf" / "run.yaml", {"train": {"pretrain": "stage1.yaml"}})
    monkeypatch.chdir(tmp_path)
    assert load_config(run).train.pretrain == str(tmp_path / "conf" / "stage1.yaml")
    (tmp_path / "conf" / "stage1.yaml").unlink()
    assert load_config(run).train.pretrain == str(tmp_path / "stage1.yaml")  # the current folder's


def test_config_mistakes_are_user_errors_naming_the_file(tmp_path):
    stage1 = stage1_file(tmp_path)
    with pytest.raises(ValueError, match=r"train\.init_from .* and train\.pretrain .* are both set"):
        two_stage_cfg(tmp_path, stage1, f"train.init_from={tmp_path}")
    missing = two_stage_cfg(tmp_path, tmp_path / "nope.yaml")
    with pytest.raises(UserError, match=r"train\.pretrain .*nope\.yaml: config file not found"):
        pretrain_config(missing)
    bad = write_yaml(tmp_path / "bad.yaml", {"meta": {"algorithm": "sasrec", "lr": 1}})
    with pytest.raises(UserError, match=r"train\.pretrain .*bad\.yaml: .*unknown config key\(s\): meta\.lr"):
        pretrain_config(two_stage_cfg(tmp_path, bad))
    (tmp_path / "broken.yaml").write_text("train: [")
    with pytest.raises(UserError, match=r"broken\.yaml: .*not valid YAML"):
        pretrain_config(two_stage_cfg(tmp_path, tmp_path / "broken.yaml"))
    for key in ("pretrain", "init_from"):  # one level only: a first stage trains from scratch
        nested = write_yaml(tmp_path / f"nested-{key}.yaml", {"train": {key: str(stage1)}})
        with pytest.raises(UserError, match=rf"nested-{key}\.yaml: that config has a train\.{key}"):
            pretrain_config(two_stage_cfg(tmp_path, nested))
    cloud = two_stage_cfg(tmp_path, stage1, "runtime.storage_path=s3://bucket/runs")
    with pytest.raises(UserError, match="train.pretrain needs runtime.storage_path on a file system"):
        pretrain_config(cloud)


def test_the_cli_reports_a_missing_first_stage_in_one_line(tmp_path, capsys):
    run = write_yaml(tmp_path / "run.yaml", {"train": {"pretrain": "missing.yaml"}})
    assert cli_main(["train", "--config", str(run), "--set", f"runtime.storage_path={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train.pretrain ") and "missing.yaml: config file not found" in err
    assert not (tmp_path / "metarec").exists()  # failed before anything was written


def test_reproduce_counts_a_run_finished_only_with_its_first_stage(two_stage, tmp_path):
    from metarec_dist.eval.reproduce import reused_checkpoint

    cfg, result = two_stage
    run_dir = Path(result["run_path"])
    assert reused_checkpoint(run_dir, cfg) == result["checkpoint"]
    # Evaluated again with settings only the test-time evaluation reads: both stages are the same runs.
    again = two_stage_cfg(tmp_path, stage1_file(tmp_path), "eval.adaptation=per_shot", "eval.tune_users=5")
    assert reused_checkpoint(run_dir, again) == result["checkpoint"]
    assert reused_checkpoint(run_dir, two_stage_cfg(tmp_path, stage1_file(tmp_path), "optim.lr=0.5")) is None
    # The same first-stage file in another checkout (its path is recorded absolute): still the same run.
    moved = tmp_path / "clone" / "stage1.yaml"
    moved.parent.mkdir()
    shutil.copy(stage1_file(tmp_path), moved)
    assert reused_checkpoint(run_dir, two_stage_cfg(tmp_path, moved)) == result["checkpoint"]
    changed = stage1_file(tmp_path / "clone", optim={"lr": 0.5})  # ... but not with other settings
    assert reused_checkpoint(run_dir, two_stage_cfg(tmp_path, changed)) is None
    shutil.rmtree(ckpt.step_dir(stage_dir(cfg), 4))  # the first stage no longer finished
    assert reused_checkpoint(run_dir, cfg) is None


def test_the_run_exports_and_loads_as_any_run_without_its_first_stage_file(two_stage, tmp_path):
    """Its weights are complete: export and evaluation read neither the first stage nor its file."""
    cfg, result = two_stage
    (tmp_path / "stage1.yaml").unlink()
    shutil.rmtree(stage_dir(cfg))
    exported = ckpt.load_exported(ckpt.export(Path(result["checkpoint"]), tmp_path / "export"))
    assert exported.cfg.train.pretrain == str(tmp_path / "stage1.yaml")
    assert_same(exported.model.state_dict(), weights(result["checkpoint"]))


def test_reproduce_evaluates_a_baseline_that_is_another_methods_first_stage_from_it(tmp_path):
    """The recipe's baseline is its first stage: the same seed's baseline run is not trained twice; a
    baseline of other settings, or of another seed, is."""
    from metarec_dist.eval.reproduce import RunSpec, share_first_stages

    stage1 = stage1_file(tmp_path)
    recipe_tree = yaml.safe_load(stage1.read_text())  # the recipe: the tiny model, its own training
    recipe_tree["train"] = {"pretrain": "stage1.yaml", "meta_steps": 3, "log_every": 1}
    recipe_tree["meta"] = {"algorithm": "fomaml", "meta_batch_size": 8}
    recipe = write_yaml(tmp_path / "recipe.yaml", recipe_tree)
    other = write_yaml(tmp_path / "other.yaml", {**yaml.safe_load(stage1.read_text()), "optim": {"lr": 0.5}})
    overrides = tuple(DATA)
    specs = [
        RunSpec(m, str(c), seed, False, overrides)
        for seed in (0, 1)
        for m, c in (("recipe", recipe), ("sasrec", stage1), ("other", other))
    ]
    shared = {(s.method, s.seed): s.shared_run for s in share_first_stages(specs, tmp_path / "out")}
    for seed in (0, 1):
        assert shared[("sasrec", seed)] == str(tmp_path / "out" / "runs" / f"recipe-s{seed}" / PRETRAIN_DIR)
        assert shared[("recipe", seed)] is None and shared[("other", seed)] is None


def test_a_missing_relative_first_stage_names_both_places_looked(tmp_path, monkeypatch):
    """A relative train.pretrain is looked for next to the config, then in the current folder: the error
    named only the current folder's path."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "here").mkdir()
    run = write_yaml(tmp_path / "conf" / "run.yaml", {"train": {"pretrain": "stage1.yaml"}})
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(ValueError, match=r"^train\.pretrain stage1\.yaml: config file not found") as err:
        load_config(run)
    assert str(tmp_path / "conf" / "stage1.yaml") in str(err.value)
    assert str(tmp_path / "here" / "stage1.yaml") in str(err.value)
