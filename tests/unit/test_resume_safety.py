"""Resume never starts from scratch or from an older step without a word, never writes over a step folder,
one run holds a run folder at a time, and a resumed config is compared with the checkpoint's (issue 12)."""

from __future__ import annotations

import json
import logging
import os
import socket

import pytest

from metarec_dist import checkpoint as ckpt
from metarec_dist.config import with_overrides
from metarec_dist.run_folder import LOCK_FILE, RunLock
from metarec_dist.runtime.context import LocalContext
from metarec_dist.train.trainer import Every, MetaTrainer


def _fit(cfg, data, run, *overrides):
    cfg = with_overrides(cfg, list(overrides))
    return MetaTrainer(cfg, LocalContext(run, cfg.checkpoint.keep), data).fit()


def _complete(folder):
    folder.mkdir(parents=True)
    ckpt.write_manifest(folder, 1, 1, {})
    return folder


# ------------------------------------------------------------------------------------ discovery


def test_newer_incomplete_checkpoints_are_named(tmp_path, caplog):
    run = tmp_path / "run"
    good = _complete(run / "checkpoints" / "step_000002")
    (run / "checkpoints" / "step_000004").mkdir()
    with caplog.at_level(logging.WARNING, logger="metarec"):
        assert ckpt.resume_point(run) == good
    assert "step_000004" in caplog.text and "incomplete" in caplog.text


def test_checkpoint_folders_without_a_complete_one_are_an_error(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step_000002").mkdir(parents=True)
    (run / "checkpoints" / "step_000004").mkdir()
    with pytest.raises(ValueError, match=r"none is complete.*step_000002, step_000004.*runtime\.run_name"):
        ckpt.resume_point(run)


def test_resume_false_over_existing_checkpoints_is_refused(tmp_path):
    run = tmp_path / "run"
    _complete(run / "checkpoint_step_000002")
    with pytest.raises(ValueError, match=r"checkpoint\.resume=false.*checkpoint_step_000002"):
        ckpt.resume_point(run, resume=False)
    assert ckpt.resume_point(tmp_path / "fresh", resume=False) is None


def test_an_existing_step_folder_is_moved_aside_not_overwritten(tmp_path):
    folder = _complete(tmp_path / "step_000004")
    assert ckpt.move_aside(folder) == tmp_path / "step_000004.old-1"
    _complete(folder)
    assert ckpt.move_aside(folder) == tmp_path / "step_000004.old-2"
    assert (tmp_path / "step_000004.old-1" / ckpt.MANIFEST).is_file()
    assert ckpt.list_checkpoints(tmp_path) == []  # moved-aside folders are never resumed or pruned


def test_pruning_deletes_interrupted_saves_moved_aside_but_never_a_complete_one(tmp_path):
    """Each kill during a save leaves a partial folder that the next save of that step moves aside: pruned
    with the old checkpoints, they do not pile up one per kill."""
    run = tmp_path / "run"
    root = run / "checkpoints"
    partial = root / "step_000004.old-1"  # no manifest: an interrupted save
    (partial / "engine").mkdir(parents=True)
    complete_aside = _complete(root / "step_000004.old-2")
    recent_partial = root / "step_000010.old-1"  # newer than the oldest kept: kept for now
    recent_partial.mkdir()
    for step in (4, 6, 8, 10):
        _complete(ckpt.step_dir(run, step))
    ckpt.prune(run, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_000008", "step_000010"]
    assert not partial.exists() and recent_partial.is_dir()
    assert (complete_aside / ckpt.MANIFEST).is_file()


@pytest.mark.parametrize("text", ["{}", "not json", '{"step": 1, "world_size": 1, "files": {"../x": 1}}'])
def test_a_garbage_manifest_names_the_file(tmp_path, text):
    (tmp_path / ckpt.MANIFEST).write_text(text)
    with pytest.raises(ValueError, match=str(tmp_path / ckpt.MANIFEST)):
        ckpt.verify(tmp_path)


def _with_shard(folder):
    """A complete checkpoint holding one real file, checked by its manifest."""
    (folder / "engine").mkdir(parents=True)
    (folder / "engine" / "model.safetensors").write_bytes(b"x" * 100)
    ckpt.write_manifest(folder, 1, 1, ckpt.file_entries(folder))
    return folder


@pytest.mark.parametrize("damage", ["truncate", "delete", "manifest"])
def test_a_damaged_newest_checkpoint_says_how_to_fall_back_to_the_previous_one(tmp_path, damage):
    run = tmp_path / "run"
    previous = _with_shard(run / "checkpoints" / "step_000002")
    newest = _with_shard(run / "checkpoints" / "step_000004")
    shard = newest / "engine" / "model.safetensors"
    if damage == "truncate":
        shard.write_bytes(b"x" * 10)
    elif damage == "delete":
        shard.unlink()
    else:
        (newest / ckpt.MANIFEST).write_text("{")
    assert ckpt.resume_point(run) == newest  # the damage is only seen when it is read
    with pytest.raises(ValueError) as err:
        ckpt.verify(newest)
    assert (
        f"rename it (e.g. to step_000004.damaged) to use the previous complete checkpoint {previous}"
        in str(err.value)
    )
    # Doing what it says resumes from the previous checkpoint, and the damaged one is kept.
    newest.rename(newest.with_name("step_000004.damaged"))
    assert ckpt.resume_point(run) == previous and ckpt.verify(previous)["step"] == 1


def test_a_damaged_only_checkpoint_says_to_start_over_under_a_new_name(tmp_path):
    only = _with_shard(tmp_path / "run" / "checkpoints" / "step_000002")
    (only / "engine" / "model.safetensors").write_bytes(b"y" * 100)  # same size, other bytes
    with pytest.raises(ValueError, match=r"sha256.*only complete checkpoint.*runtime\.run_name=NEW"):
        ckpt.verify(only)


def test_a_file_where_the_checkpoints_go_is_an_error_before_training(tiny_cfg, synth_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("not a folder")
    with pytest.raises(ValueError, match=r"checkpoints is a file, where this run keeps its checkpoints"):
        _fit(tiny_cfg, synth_data, run)
    assert (run / "checkpoints").read_text() == "not a folder"


# ------------------------------------------------------------------------------------ run lock


def test_a_second_run_on_a_locked_run_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        second = RunLock(run)
        with pytest.raises(ValueError, match=rf"in use by another metarec run \(pid {os.getpid()} on "):
            second.__enter__()
        holder = json.loads((run / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with RunLock(run):  # released on exit
        pass


def test_a_lock_file_left_by_a_dead_process_does_not_block(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": 999_999_999, "host": "gone", "since": "x"}))
    with RunLock(run):
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_lock_held_past_its_recorded_holder_says_so(tmp_path):
    """The recorded pid has exited but the lock is still held (a child it started inherited the lock)."""
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    fd = os.open(run / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({"pid": 999_999_999, "host": socket.gethostname(), "since": "x"}).encode())
        with pytest.raises(
            ValueError, match=r"pid 999999999 has exited; a process it started holds the lock"
        ):
            RunLock(run).__enter__()
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------ the loop's parts


def test_schedules():
    assert [s for s in range(1, 8) if Every(3, last=7)(s)] == [3, 6, 7]
    assert not any(Every(0)(s) for s in range(1, 8))


def test_checkpointer_saves_on_its_schedule(tiny_cfg, synth_data, tmp_path):
    run = tmp_path / "run"
    out = _fit(tiny_cfg, synth_data, run, "train.meta_steps=4", "checkpoint.every=2", "checkpoint.keep=5")
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_000002", "step_000004"]
    client = json.loads((run / "checkpoints" / "step_000004" / ckpt.CLIENT_STATE).read_text())
    assert client["step"] == 4 and client["train_state"]["step"] == 4 and "sampler" in client
    assert out["checkpoint"] == str(run / "checkpoints" / "step_000004")
    no_storage = MetaTrainer(tiny_cfg, LocalContext(None), synth_data)
    assert not no_storage.checkpointer.should_save(2)


# ------------------------------------------------------------------------------------ resume


def test_resume_continues_and_a_finished_run_is_not_saved_over(tiny_cfg, synth_data, tmp_path):
    run = tmp_path / "run"
    _fit(tiny_cfg, synth_data, run, "train.meta_steps=2")
    manifest = run / "checkpoints" / "step_000002" / ckpt.MANIFEST
    before = manifest.stat().st_mtime_ns
    again = _fit(tiny_cfg, synth_data, run, "train.meta_steps=2")  # nothing left to train
    assert again["resumed_from"] == 2 and again["checkpoint"] == str(manifest.parent)
    assert manifest.stat().st_mtime_ns == before
    assert _fit(tiny_cfg, synth_data, run, "train.meta_steps=3")["resumed_from"] == 2


def test_rerunning_a_finished_run_says_so_and_gives_no_resume_hint(tiny_cfg, synth_data, tmp_path, caplog):
    from metarec_dist.train.summary import format_summary

    run, cfg = tmp_path / "run", with_overrides(tiny_cfg, ["train.meta_steps=2"])
    first = _fit(cfg, synth_data, run)
    assert "continue:   raise train.meta_steps" in format_summary(first, cfg)
    with caplog.at_level(logging.WARNING, logger="metarec"):
        again = _fit(cfg, synth_data, run)  # exits normally, reusing the run (train.pretrain relies on it)
    assert (
        "run 'metarec' already finished at meta-step 2 (all train.meta_steps done); nothing to train. "
        "Raise train.meta_steps to continue, or choose another runtime.run_name" in caplog.text
    )
    summary = format_summary(again, cfg)
    assert "already, at meta-step 2; nothing was trained" in summary and "re-run" not in summary


def test_shape_changing_settings_are_an_error_naming_the_keys(tiny_cfg, synth_data, tmp_path):
    run = tmp_path / "run"
    _fit(tiny_cfg, synth_data, run, "train.meta_steps=2")
    with pytest.raises(ValueError, match=r"model\.hidden_size: 16 -> 32.*runtime\.run_name=NEW"):
        _fit(tiny_cfg, synth_data, run, "train.meta_steps=3", "model.hidden_size=32")
    with pytest.raises(ValueError, match=r"model\.adapters: \['lowrank'\] -> \['lowrank', 'bias'\]"):
        _fit(tiny_cfg, synth_data, run, "train.meta_steps=3", "model.adapters=[lowrank,bias]")


def test_parameters_of_another_shape_are_named_whatever_setting_caused_them(tmp_path):
    saved = {"head.w": [4, 8], "inner_lr_log_scale": [8]}
    with pytest.raises(
        ValueError, match=r"head\.w: \[4, 8\] -> \[4, 16\]; inner_lr_log_scale: \[8\] -> None"
    ):
        ckpt.check_param_shapes(tmp_path, saved, {"head.w": [4, 16]})
    ckpt.check_param_shapes(tmp_path, saved, dict(saved))
    ckpt.check_param_shapes(tmp_path, None, {"head.w": [4, 16]})  # written before shapes were recorded


def test_other_changed_settings_are_a_warning_listing_old_and_new(tiny_cfg, synth_data, tmp_path, caplog):
    run = tmp_path / "run"
    _fit(tiny_cfg, synth_data, run, "train.meta_steps=2")
    with caplog.at_level(logging.WARNING, logger="metarec"):
        out = _fit(
            tiny_cfg, synth_data, run, "train.meta_steps=3", "optim.lr=0.002", "meta.algorithm=reptile"
        )
    assert out["resumed_from"] == 2
    assert (
        "optim.lr: 0.001 -> 0.002" in caplog.text and "meta.algorithm: 'fomaml' -> 'reptile'" in caplog.text
    )
    assert "model.hidden_size" not in caplog.text


def test_a_changed_optimizer_setting_takes_effect_from_the_resumed_step(tiny_cfg, synth_data, tmp_path):
    """The resume reports optim.* changes as accepted: the optimizer must then use them (torch's
    load_state_dict would restore the checkpoint's lr, base_lrs and weight decay)."""
    from metarec_dist.runtime.engine import lr_lambda

    run, schedule = tmp_path / "run", ["optim.schedule=cosine", "optim.warmup_steps=1"]
    _fit(tiny_cfg, synth_data, run, "train.meta_steps=2", "optim.lr=0.005", *schedule)
    new = ["train.meta_steps=4", "optim.lr=0.006", "optim.weight_decay=0.01", *schedule]
    cfg = with_overrides(tiny_cfg, new)
    trainer = MetaTrainer(cfg, LocalContext(run, cfg.checkpoint.keep), synth_data)
    assert trainer.checkpointer.load() == 2
    expected = 0.006 * lr_lambda(cfg.optim, 4)(2)  # the new schedule at the resumed step
    assert trainer.engine.get_lr() == pytest.approx([expected])
    group = trainer.engine.optimizer.param_groups[0]
    assert group["initial_lr"] == 0.006 and group["weight_decay"] == 0.01
    assert trainer.engine.lr_scheduler.base_lrs == [0.006]
    trainer.train_step()  # and the schedule continues from there with the new peak lr
    assert trainer.engine.get_lr() == pytest.approx([0.006 * lr_lambda(cfg.optim, 4)(3)])


def test_a_different_catalogue_is_an_error(tiny_cfg, synth_data, tmp_path):
    run = tmp_path / "run"
    _fit(tiny_cfg, synth_data, run, "train.meta_steps=2")
    synth_data.num_items += 1
    with pytest.raises(ValueError, match=r"num_items.*40 -> 41"):
        _fit(tiny_cfg, synth_data, run, "train.meta_steps=3")


# ------------------------------------------------------------------------------------ Ray: on the driver


def _ray_cfg(tmp_path, *extra):
    from metarec_dist.config import load_config

    sets = ["runtime.backend=ray", f"runtime.storage_path={tmp_path}", "runtime.run_name=r"]
    return load_config(
        None, [*sets, "data.format=synthetic", "data.synthetic_users=40", "data.cache=false", *extra]
    )


def test_ray_driver_takes_the_lock_and_checks_the_run_folder_before_ray_starts(tmp_path):
    import ray

    from metarec_dist.runtime.ray_launcher import train_on_ray

    with RunLock(tmp_path / "r"), pytest.raises(ValueError, match=r"r is in use by another metarec run"):
        train_on_ray(_ray_cfg(tmp_path))
    (tmp_path / "r" / ckpt.ray_checkpoint_name(2)).mkdir()  # Ray layout, manifest missing
    with pytest.raises(ValueError, match=r"none is complete \(no manifest\.json in checkpoint_step_000002\)"):
        train_on_ray(_ray_cfg(tmp_path))
    assert not ray.is_initialized()


def test_ray_driver_removes_the_users_scratch_a_killed_run_left_and_nothing_else(tmp_path):
    import ray

    from metarec_dist.runtime.ray_launcher import train_on_ray

    run = tmp_path / "r"
    scratch = run / ".users-k1ll3d"  # what a run killed with kill -9 leaves: a copy of its users
    (scratch / "users").mkdir(parents=True)
    (scratch / "users" / "part-0.parquet").write_bytes(b"x" * 100)
    (run / ".users-notes.txt").write_text("keep me")  # the prefix, but a file metarec never writes
    (run / ckpt.ray_checkpoint_name(2)).mkdir()  # stops the run before Ray starts
    with RunLock(run), pytest.raises(ValueError, match="in use by another metarec run"):
        train_on_ray(_ray_cfg(tmp_path))
    assert scratch.is_dir()  # a live run's scratch (it holds the lock) is never touched
    with pytest.raises(ValueError, match="none is complete"):
        train_on_ray(_ray_cfg(tmp_path))
    assert not scratch.exists() and (run / ".users-notes.txt").read_text() == "keep me"
    assert (run / ckpt.ray_checkpoint_name(2)).is_dir() and not ray.is_initialized()


@pytest.mark.parametrize(("ray_step", "resumed"), [(30, "run folder's"), (50, "ray's"), (40, "ray's")])
def test_ray_workers_resume_from_the_newer_of_rays_record_and_the_run_folder(
    tmp_path, monkeypatch, caplog, ray_step, resumed
):
    """A run killed with kill -9 leaves Ray's record of its checkpoints (restored by the next run of the
    same name) behind the run folder; after a failover within a run, Ray's is the newer one."""
    import ray.train

    from metarec_dist.runtime.ray_worker import RayContext

    run = tmp_path / "r"
    newest = _complete(run / ckpt.ray_checkpoint_name(40))  # what the driver found and said it resumes
    rays = run / ckpt.ray_checkpoint_name(ray_step)
    if not rays.exists():
        _complete(rays)
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: ray.train.Checkpoint.from_directory(str(rays)))
    ctx = RayContext.__new__(RayContext)  # a worker's context, without a Ray Train worker around it
    ctx.run_dir, ctx.resume_from = run, newest
    with caplog.at_level(logging.WARNING, logger="metarec"), ctx.resume_dir() as folder:
        assert folder == (rays if resumed == "ray's" else newest)
    assert ("is older than the run folder's newest complete one" in caplog.text) == (ray_step < 40)


def test_ray_driver_names_shape_changes_and_prints_other_changes(tmp_path, caplog):
    from metarec_dist.metrics.redact import redact
    from metarec_dist.runtime.ray_launcher import check_resume, for_workers

    saved = for_workers(_ray_cfg(tmp_path))
    folder = _complete(tmp_path / "r" / ckpt.ray_checkpoint_name(2))
    state = {"step": 2, "config": redact(saved.to_dict()), "num_items": 40}
    (folder / ckpt.CLIENT_STATE).write_text(json.dumps(state))
    with caplog.at_level(logging.WARNING, logger="metarec"):
        assert check_resume(for_workers(_ray_cfg(tmp_path, "optim.lr=0.01")), 40) == folder
    assert "optim.lr: 0.001 -> 0.01" in caplog.text
    with pytest.raises(ValueError, match=r"runtime\.zero_stage: 0 -> 3"):
        check_resume(for_workers(_ray_cfg(tmp_path, "runtime.zero_stage=3")), 40)


# ------------------------------------------------------------------------------------ interrupted


class InterruptAt:
    """A metrics logger that presses Ctrl-C when the trainer logs ``step``."""

    def __init__(self, step):
        self.step = step

    def log(self, metrics, step):
        if step == self.step:
            raise KeyboardInterrupt

    def close(self):
        pass


@pytest.mark.parametrize("every", [0, 2])
def test_an_interrupted_run_says_where_a_rerun_starts(tiny_cfg, synth_data, tmp_path, every):
    from metarec_dist.run_folder import local_run_dir
    from metarec_dist.train.launch import interrupted_message
    from metarec_dist.train.trainer import TrainingInterrupted

    sets = ["train.meta_steps=6", f"checkpoint.every={every}", f"runtime.storage_path={tmp_path}"]
    cfg = with_overrides(tiny_cfg, [*sets, "runtime.run_name=r"])
    run = local_run_dir(cfg.runtime)
    with pytest.raises(TrainingInterrupted) as caught:
        MetaTrainer(cfg, LocalContext(run), synth_data, InterruptAt(3)).fit()
    assert caught.value.step == 3  # trained; interrupted while logging it, before its checkpoint
    text = interrupted_message(cfg, caught.value.step)
    if every:
        assert text.startswith("interrupted at meta-step 3; a re-run of the same command resumes the run")
        assert "from meta-step 2" in text
        assert _fit(cfg, synth_data, run)["resumed_from"] == 2
    else:
        assert text == (
            f"interrupted at meta-step 3; the run in {run} has no checkpoint (checkpoint.every is 0): "
            "a re-run starts at meta-step 0"
        )


def test_ray_driver_refuses_another_number_of_workers_before_ray_starts(tmp_path):
    from metarec_dist.metrics.redact import redact
    from metarec_dist.runtime.ray_launcher import check_resume, for_workers

    saved = for_workers(_ray_cfg(tmp_path, "runtime.num_workers=2"))
    folder = tmp_path / "r" / ckpt.ray_checkpoint_name(2)
    folder.mkdir(parents=True)
    ckpt.write_manifest(folder, 2, 2, {})  # written by 2 workers
    state = {"step": 2, "config": redact(saved.to_dict()), "num_items": 40}
    (folder / ckpt.CLIENT_STATE).write_text(json.dumps(state))
    with pytest.raises(
        ValueError, match=r"written by 2 workers and runtime\.num_workers is 1.*num_workers=2"
    ):
        check_resume(for_workers(_ray_cfg(tmp_path)), 40)
    assert check_resume(saved, 40) == folder


class _DiskFullEngine:
    """Writes part of its shard, then finds the disk full (as a real save does at the first byte too many)."""

    def save_checkpoint(self, path: str, tag: str) -> None:
        os.makedirs(f"{path}/{tag}")
        with open(f"{path}/{tag}/model.safetensors", "wb") as f:
            f.write(b"x" * 1000)
        raise OSError(28, "No space left on device")


def test_a_save_that_fails_on_a_full_disk_removes_its_partial_files(tmp_path):
    run = tmp_path / "run"
    earlier = _with_shard(run / "checkpoints" / "step_000002")
    before = ckpt.file_entries(earlier)
    folder = ckpt.step_dir(run, 4)
    with pytest.raises(ckpt.CheckpointWriteError, match="No space left.*partial files were removed"):
        ckpt.save_checkpoint(_DiskFullEngine(), folder, {"step": 4}, LocalContext(run))
    assert not folder.exists()  # the space it took is free again for the re-run
    assert ckpt.file_entries(earlier) == before and ckpt.resume_point(run) == earlier


def test_a_failed_save_never_removes_a_folder_it_did_not_create(tmp_path):
    folder = tmp_path / "staging"  # e.g. a folder given to the save, with someone's file in it
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ckpt.CheckpointWriteError, match="stays incomplete"):
        ckpt.save_checkpoint(_DiskFullEngine(), folder, {"step": 4}, LocalContext(tmp_path))
    assert (folder / "notes.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------ pruning beyond Ray


def _ray_snapshot(run, *steps):
    results = [
        {"version": 0, "checkpoint_dir_name": ckpt.ray_checkpoint_name(s), "metrics": {}} for s in steps
    ]
    latest = results[-1] if results else None
    (run / ckpt.RAY_SNAPSHOT).write_text(
        json.dumps({"ray_version": "x", "checkpoint_results": results, "latest_checkpoint_result": latest})
    )


def _ray_context(run, resume_from, keep):
    from metarec_dist.runtime.ray_worker import RayContext

    ctx = RayContext.__new__(RayContext)  # rank 0 of a Ray Train worker, without Ray around it
    ctx.rank, ctx.run_dir, ctx.resume_from, ctx.keep = 0, run, resume_from, keep
    ctx._reported, ctx._tracked_at_start = set(), ckpt.ray_tracked_checkpoints(run)
    return ctx


def test_the_snapshot_names_the_checkpoints_ray_tracks(tmp_path):
    assert ckpt.ray_tracked_checkpoints(tmp_path) == set()  # no snapshot: Ray tracks none
    _ray_snapshot(tmp_path, 65, 70)
    assert ckpt.ray_tracked_checkpoints(tmp_path) == {
        tmp_path / ckpt.ray_checkpoint_name(65),
        tmp_path / ckpt.ray_checkpoint_name(70),
    }
    (tmp_path / ckpt.RAY_SNAPSHOT).write_text('{"checkpoint_results": [{"checkpoint_dir_na')  # mid-write
    assert ckpt.ray_tracked_checkpoints(tmp_path) is None


def test_a_ray_run_prunes_the_checkpoints_of_a_killed_driver_that_ray_never_registered(tmp_path):
    """A driver killed with kill -9 after saving steps 35 and 40: Ray's record (restored by the next run)
    has 20 and 30 only, so Ray never deletes 35 and 40. Rank 0 does, after a save, once they are older than
    the newest checkpoint.keep; never what Ray tracks (it fails on a checkpoint deleted under it), nor the
    checkpoint the run resumed from, nor anything not named as a checkpoint."""
    run = tmp_path / "r"
    for step in (20, 30, 35, 40):
        _complete(run / ckpt.ray_checkpoint_name(step))
    _ray_snapshot(run, 20, 30)
    (run / "checkpoint_step_notes").mkdir()
    (run / "step_000001").mkdir()
    ctx = _ray_context(run, resume_from=run / ckpt.ray_checkpoint_name(40), keep=2)
    ctx.prune_checkpoints(ctx.resume_from)  # at the start: 35 and 40 are the newest two
    assert len(ckpt.list_checkpoints(run)) == 4
    for step in (45, 50):  # this run's saves, reported to Ray
        _complete(run / ckpt.ray_checkpoint_name(step))
        ctx._reported.add(run / ckpt.ray_checkpoint_name(step))
        ctx.prune_checkpoints()
    _ray_snapshot(run, 45, 50)  # Ray registered them (and deletes 20 and 30 itself)
    ctx.prune_checkpoints()
    assert _steps(run) == [20, 30, 40, 45, 50]
    assert (run / "checkpoint_step_notes").is_dir() and (run / "step_000001").is_dir()


def test_a_ray_worker_prunes_nothing_while_rays_record_cannot_be_read(tmp_path):
    run = tmp_path / "r"
    for step in (10, 20, 30):
        _complete(run / ckpt.ray_checkpoint_name(step))
    (run / ckpt.RAY_SNAPSHOT).write_text("{")
    ctx = _ray_context(run, resume_from=None, keep=1)
    ctx.prune_checkpoints()
    assert _steps(run) == [10, 20, 30]


def _steps(run):
    return [ckpt.checkpoint_step(p.name) for p in ckpt.list_checkpoints(run)]


def test_pruning_never_deletes_a_protected_folder_nor_anything_without_a_complete_checkpoint(tmp_path):
    run = tmp_path / "run"
    (ckpt.step_dir(run, 2) / "engine").mkdir(parents=True)  # incomplete only
    ckpt.prune(run, keep=1)
    assert _steps(run) == [2]
    for step in (4, 6, 8):
        _complete(ckpt.step_dir(run, step))
    ckpt.prune(run, keep=1, protect=[ckpt.step_dir(run, 4)])
    assert _steps(run) == [4, 8]


def test_a_lowered_keep_frees_the_disk_when_the_run_resumes_before_its_next_save(
    tiny_cfg, synth_data, tmp_path, monkeypatch
):
    run = tmp_path / "run"
    _fit(tiny_cfg, synth_data, run, "train.meta_steps=6", "checkpoint.every=2", "checkpoint.keep=5")
    assert _steps(run) == [2, 4, 6]
    seen = []
    save = ckpt.save_checkpoint

    def counting_save(engine, folder, *args, **kwargs):
        seen.append(_steps(run))  # what is on disk when the next checkpoint is written
        return save(engine, folder, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", counting_save)
    out = _fit(tiny_cfg, synth_data, run, "train.meta_steps=8", "checkpoint.every=2", "checkpoint.keep=1")
    assert out["resumed_from"] == 6
    assert seen == [[6]] and _steps(run) == [8]
