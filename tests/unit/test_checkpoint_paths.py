"""Finding a run's checkpoints in both layouts (one-process runs and Ray Train runs)."""

from __future__ import annotations

import pytest

from metarec_dist import checkpoint as ckpt
from metarec_dist.eval.loading import resolve_checkpoint


def _make(folder, complete=True):
    folder.mkdir(parents=True)
    if complete:
        (folder / ckpt.MANIFEST).write_text("{}")
    return folder


def test_local_layout_newest_complete_wins(tmp_path):
    run = tmp_path / "run"
    _make(run / "checkpoints" / "step_000010")
    newest_complete = _make(run / "checkpoints" / "step_000200")
    _make(run / "checkpoints" / "step_001000", complete=False)  # an interrupted save
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_000010", "step_000200", "step_001000"]
    assert ckpt.find_checkpoint(run) == newest_complete
    assert resolve_checkpoint(run) == newest_complete


def test_ray_layout_is_found_next_to_ray_trains_files(tmp_path):
    run = tmp_path / "quickstart"
    _make(run / ckpt.ray_checkpoint_name(400))  # the name the Ray workers report under
    newest = _make(run / ckpt.ray_checkpoint_name(600))
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    (run / "wandb").mkdir()
    names = [p.name for p in ckpt.list_checkpoints(run)]
    assert names == ["checkpoint_step_000400", "checkpoint_step_000600"]
    assert ckpt.find_checkpoint(run) == newest
    assert resolve_checkpoint(run) == newest


def test_steps_sort_numerically_past_six_digits(tmp_path):
    run = tmp_path / "long"
    _make(run / "checkpoint_step_999999")
    newest = _make(run / "checkpoint_step_1000000")
    assert ckpt.find_checkpoint(run) == newest


def test_run_folder_without_a_complete_checkpoint_is_named(tmp_path):
    run = tmp_path / "broken"
    _make(run / "checkpoint_step_000005", complete=False)
    with pytest.raises(ValueError, match=r"broken: no complete checkpoint yet .* wait for the run.s next"):
        ckpt.find_checkpoint(run)
    with pytest.raises(ValueError, match="broken"):
        resolve_checkpoint(run)


def test_a_checkpoint_folder_is_returned_as_given(tmp_path):
    folder = _make(tmp_path / "checkpoint_step_000001")
    assert ckpt.find_checkpoint(folder) == folder
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ckpt.find_checkpoint(empty) == empty  # export's own check then names what is missing
    with pytest.raises(ValueError, match="not a checkpoint"):
        resolve_checkpoint(empty)
