"""Session 18: evaluation refuses a model on other data than it was trained on (raw item ids, the training
digest, the side tables), and resume compares resolved settings and the side tables."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from feature_data import feature_config  # noqa: E402

from metarec_dist import checkpoint as ckpt  # noqa: E402
from metarec_dist.config import load_config, with_overrides  # noqa: E402
from metarec_dist.data import prepare_data  # noqa: E402
from metarec_dist.errors import UserError  # noqa: E402
from metarec_dist.eval.loading import check_same_data, load_model, load_prepared  # noqa: E402
from metarec_dist.runtime.context import LocalContext  # noqa: E402
from metarec_dist.train.trainer import MetaTrainer  # noqa: E402

SMALL = [
    "model.hidden_size=16",
    "model.num_heads=2",
    "model.adapter_rank=2",
    "meta.meta_batch_size=8",
    "train.meta_steps=1",
    "train.eval_every=0",
    "tasks.support_max=5",
    "logging.wandb=off",
]


def _fit(cfg, run: Path, *overrides: str) -> dict:
    cfg = with_overrides(cfg, list(overrides))
    data = prepare_data(cfg.data).user_splits()
    return MetaTrainer(cfg, LocalContext(run, cfg.checkpoint.keep), data).fit()


def relative_log_project(tmp_path: Path, monkeypatch, storage: str, run_name: str):
    """A project folder holding ``log.csv`` (``_write_log``) and the working folder, a second folder to
    work from later, and the config of a run there that names the log relatively (``data.path: log.csv``)."""
    from metarec_dist.config import load_config

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir(), elsewhere.mkdir()
    _write_log(project / "log.csv")
    monkeypatch.chdir(project)
    sets = ["data.path=log.csv", "data.format=csv", "data.string_ids=true", "data.cache=false"]
    cfg = load_config(
        None, [*SMALL, *sets, f"runtime.storage_path={storage}", f"runtime.run_name={run_name}"]
    )
    return project, elsewhere, cfg


def _write_log(path: Path, rename: dict[str, str] | None = None) -> Path:
    """60 users over 30 items named i0..i29; ``rename`` gives items other names (the same set of names)."""
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for u in range(60):
        for t, i in enumerate(rng.choice(30, 8, replace=False)):
            name = f"i{i}"
            lines.append(f"u{u},{(rename or {}).get(name, name)},{1000 * u + t}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _csv_cfg(path: Path):
    sets = [f"data.path={path}", "data.format=csv", "data.string_ids=true", "data.cache=false"]
    return load_config(None, [*SMALL, *sets])


@pytest.fixture
def csv_run(tmp_path):
    log = _write_log(tmp_path / "log.csv")
    cfg = _csv_cfg(log)
    _fit(cfg, tmp_path / "run")
    return cfg, log, tmp_path / "run"


def _check(run: Path) -> None:
    """What `metarec evaluate` does: the model, then the data of its config, then the check."""
    loaded = load_model(run)
    prepared = load_prepared(loaded.cfg)  # held, as the callers hold it
    check_same_data(loaded, prepared)


def test_evaluating_on_the_same_data_again_is_accepted(csv_run):
    cfg, log, run = csv_run
    _check(run)
    loaded = load_model(run)
    copy = shutil.copy(log, log.parent / "copy.csv")  # the same file at another path: the same data
    check_same_data(loaded, prepare_data(_csv_cfg(Path(copy)).data))


def test_a_log_whose_items_were_renamed_is_refused(csv_run):
    """Same size, same set of raw ids, other items behind them: only the training digest tells."""
    _, log, run = csv_run
    _write_log(log, {f"i{i}": f"i{(i + 7) % 30}" for i in range(30)})
    with pytest.raises(UserError) as err:
        _check(run)
    msg = str(err.value)
    assert "training users or their interactions differ" in msg and str(log) in msg and "\n" not in msg
    assert str(ckpt.find_checkpoint(run)) in msg and "train a new run on this data" in msg


def test_a_catalogue_of_the_same_size_with_other_ids_is_refused(csv_run):
    _, log, run = csv_run
    _write_log(log, {"i5": "zz"})  # one item renamed: the same count, the raw ids differ
    with pytest.raises(UserError, match=r"item \d+ was '.*', the data now has '.*'"):
        _check(run)


def test_an_export_is_checked_too_and_an_old_one_without_digest_is_not_refused(csv_run, tmp_path):
    _, log, run = csv_run
    out = ckpt.export(ckpt.find_checkpoint(run), tmp_path / "exp")
    _check(out)
    _write_log(log, {f"i{i}": f"i{(i + 7) % 30}" for i in range(30)})
    with pytest.raises(UserError, match="training users or their interactions differ"):
        _check(out)
    meta = json.loads((out / ckpt.EXPORT_CONFIG).read_text())
    del meta[ckpt.TRAIN_DATA]  # an export from before the digest: the raw ids are all it can compare
    (out / ckpt.EXPORT_CONFIG).write_text(json.dumps(meta))
    _check(out)


def test_the_digest_of_several_ranks_is_recomputed_from_the_whole_data(synth_data):
    from metarec_dist.data.digest import combine, sequences_digest, sharded_digest

    users = np.arange(len(synth_data.train))
    ranks = [np.flatnonzero(users % 2 == r) for r in range(2)]
    per_rank = [sequences_digest([synth_data.train[i] for i in mine], users[mine]) for mine in ranks]
    assert sharded_digest(synth_data.train, users, 2) == combine(per_rank)
    assert sharded_digest(synth_data.train, users, 1) == sequences_digest(synth_data.train, users)


def test_intermediate_size_left_to_its_default_or_written_out_is_the_same_model(
    tiny_cfg, synth_data, tmp_path
):
    run = tmp_path / "run"

    def fit(*sets: str) -> dict:
        cfg = with_overrides(tiny_cfg, list(sets))
        return MetaTrainer(cfg, LocalContext(run, cfg.checkpoint.keep), synth_data).fit()

    fit("train.meta_steps=1")  # model.intermediate_size: null, hidden 16 -> 64
    assert fit("train.meta_steps=2", "model.intermediate_size=64")["resumed_from"] == 1
    assert fit("train.meta_steps=3", "model.intermediate_size=null")["resumed_from"] == 2
    with pytest.raises(UserError, match=r"model.intermediate_size: 64 -> 32"):
        fit("train.meta_steps=4", "model.intermediate_size=32")


def _change_item_table(cfg) -> None:
    item = Path(cfg.data.path).with_suffix(".item")
    rows = item.read_text().splitlines()
    rows[1] = rows[1].rsplit("\t", 1)[0] + "\tg1"  # item 1: genre g0 -> g1 (the vocabulary kept)
    item.write_text("\n".join(rows) + "\n")


def test_changed_feature_files_are_refused_on_resume_and_at_evaluation(tmp_path):
    cfg = feature_config(tmp_path, SMALL)
    run = tmp_path / "run"
    _fit(cfg, run)
    state = json.loads((ckpt.find_checkpoint(run) / ckpt.CLIENT_STATE).read_text())
    assert len(state[ckpt.TRAIN_FEATURES]) == 64
    _check(run)
    _change_item_table(cfg)
    with pytest.raises(UserError) as err:
        _fit(cfg, run, "train.meta_steps=2")
    assert "side tables" in str(err.value) and "no data setting changed" in str(err.value)
    with pytest.raises(UserError, match="side tables"):
        _check(run)


def test_a_checkpoint_without_the_feature_digest_still_resumes(tmp_path):
    cfg = feature_config(tmp_path, SMALL)
    run = tmp_path / "run"
    _fit(cfg, run)
    folder = ckpt.find_checkpoint(run)
    state = json.loads((folder / ckpt.CLIENT_STATE).read_text())
    del state[ckpt.TRAIN_FEATURES]
    (folder / ckpt.CLIENT_STATE).write_text(json.dumps(state))
    ckpt.write_manifest(folder, 1, 1, ckpt.file_entries(folder))
    _change_item_table(cfg)
    assert _fit(cfg, run, "train.meta_steps=2")["resumed_from"] == 1


def _ray_checkpoint(tmp_path: Path):
    from metarec_dist.metrics.redact import redact
    from metarec_dist.runtime.ray_launcher import for_workers

    sets = ["runtime.backend=ray", f"runtime.storage_path={tmp_path}", "runtime.run_name=r"]
    cfg = for_workers(load_config(None, [*sets, "data.format=synthetic", "data.cache=false"]))
    folder = tmp_path / "r" / ckpt.ray_checkpoint_name(2)
    folder.mkdir(parents=True)
    ckpt.write_manifest(folder, 2, 1, {})
    ids = [str(i) for i in range(1, 41)]
    state = {"step": 2, "config": redact(cfg.to_dict()), "num_items": 40, "item_raw_ids": ids}
    state[ckpt.TRAIN_DATA] = "a" * 64
    (folder / ckpt.CLIENT_STATE).write_text(json.dumps(state))
    return cfg, folder, state, ids


def test_on_ray_changed_data_is_one_refusal_not_a_warning_first(tmp_path, caplog):
    """The driver reads no training rows: with a data setting changed it says nothing of the changes and
    leaves them all to rank 0, which refuses other data or says them once (raycluster19: the driver used
    to warn of the other settings first; tests/unit/test_rc19_resume_notes.py)."""
    from metarec_dist.runtime.ray_launcher import check_resume_settings, resume_point_of

    cfg, folder, state, ids = _ray_checkpoint(tmp_path)
    moved = with_overrides(cfg, ["data.seed=5", "optim.lr=0.01"])
    with caplog.at_level(logging.INFO, logger="metarec"):
        say = check_resume_settings(moved, resume_point_of(moved), 40, ids)  # the driver
    assert say == "all" and not caplog.records
    with caplog.at_level(logging.WARNING, logger="metarec"), pytest.raises(UserError) as err:
        ckpt.check_resume_config(folder, state, moved, 40, ids, "b" * 64, say=say)  # rank 0
    assert not caplog.records and "data.seed: 0 -> 5" in str(err.value)
    # The same data after all: rank 0 says every change, once; other ranks nothing.
    for say, expected in (("all", True), ("none", False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="metarec"):
            ckpt.check_resume_config(folder, state, moved, 40, ids, "a" * 64, say=say)
        said = " ".join(r.getMessage() for r in caplog.records)
        assert ("data.seed" in said) == expected and ("optim.lr" in said) == expected


def test_a_damaged_client_state_read_before_the_manifest_check_says_what_to_do(tmp_path):
    """The progress bar reads the resumed step before the checkpointer verifies the files: the error it
    raises must still say how to fall back to the previous checkpoint."""
    folders = [tmp_path / "run" / "checkpoints" / f"step_{s:06d}" for s in (1, 2)]
    for step, folder in enumerate(folders, 1):
        folder.mkdir(parents=True)
        (folder / ckpt.CLIENT_STATE).write_text(json.dumps({"step": step}))
        ckpt.write_manifest(folder, step, 1, ckpt.file_entries(folder))
    (folders[1] / ckpt.CLIENT_STATE).write_text('{"step": ')  # truncated
    with pytest.raises(UserError) as err:
        ckpt.read_client_state(folders[1])
    assert "damaged" in str(err.value) and f"previous complete checkpoint {folders[0]}" in str(err.value)
    (folders[1] / ckpt.CLIENT_STATE).write_text('{"step": "2"}')
    with pytest.raises(UserError, match=r"no integer 'step'.*step_000002.damaged"):
        ckpt.read_client_state(folders[1])


def test_damaged_item_ids_in_an_export_are_named_at_evaluation(csv_run, tmp_path):
    _, _, run = csv_run
    out = ckpt.export(ckpt.find_checkpoint(run), tmp_path / "exp")
    meta = json.loads((out / ckpt.EXPORT_CONFIG).read_text())
    meta["item_raw_ids"] = {"i0": 1}
    (out / ckpt.EXPORT_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"item ids it stores are damaged .*export the checkpoint again"):
        _check(out)
