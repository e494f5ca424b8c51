"""``runtime.use_gpu=true`` on a machine whose torch sees no CUDA device (the README's GPU recipe tried on a
laptop): one line naming the setting before any data is read or run folder made, not torch's traceback."""

from __future__ import annotations

import torch
from test_safety import assert_fails
from trained import train_args


def test_use_gpu_without_a_visible_gpu_is_one_line_before_the_run_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = train_args(tmp_path, "gpu", "runtime.use_gpu=true", "runtime.backend=local")
    assert_fails(capsys, argv, "runtime.use_gpu=true", "sees no CUDA GPU", "runtime.use_gpu=false")
    assert not (tmp_path / "gpu").exists()


def test_several_workers_on_the_local_backend_are_refused_before_the_run_folder(tmp_path, capsys, one_gpu):
    """rt23: the local backend trains in this one process (rank 0 of 1); ``runtime.num_workers=2`` there was
    ignored without a word (one process on cuda:0, the run recording 2 workers). Refused, GPU or not."""
    gpu = train_args(
        tmp_path, "two", "runtime.use_gpu=true", "runtime.num_workers=2", "runtime.backend=local"
    )
    err = assert_fails(capsys, gpu, "runtime.num_workers=2 with runtime.backend=local", "cuda:0")
    assert "set runtime.backend=ray to train 2 data-parallel workers, one GPU each" in err
    assert err.count("\n") == 1 and err.endswith("or runtime.num_workers=1\n")
    cpu = train_args(tmp_path, "two", "runtime.num_workers=2", "runtime.backend=local")
    assert_fails(capsys, cpu, "runtime.num_workers=2 with runtime.backend=local", "on the CPU")
    assert not (tmp_path / "two").exists()
