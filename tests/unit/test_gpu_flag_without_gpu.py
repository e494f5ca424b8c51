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
