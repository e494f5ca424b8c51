"""Inputs found wrong by the twenty-first session's helpers: a config path that is a device, and synthetic
data sizes that cannot fit in memory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from metarec_dist.cli import main
from metarec_dist.config import read_yaml
from metarec_dist.errors import UserError

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")


def test_a_device_as_config_is_named_as_not_a_file_and_a_pipe_is_read(tmp_path):
    with pytest.raises(UserError, match="config file /dev/null: not a regular file"):  # was "not found"
        read_yaml("/dev/null")
    fifo = tmp_path / "cfg"
    os.mkfifo(fifo)  # what `--config <(...)` gives
    pid = os.fork()
    if pid == 0:  # the writer end, as the shell's process substitution
        with open(fifo, "w") as f:
            f.write("train:\n  meta_steps: 1\n")
        os._exit(0)
    try:
        assert read_yaml(fifo) == {"train": {"meta_steps": 1}}
    finally:
        os.waitpid(pid, 0)


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("data.synthetic_users=1000000000", "error: data.synthetic_users=1,000,000,000 (mean length"),
        ("data.synthetic_items=100000000000", "error: data.synthetic_items=100,000,000,000: the item tables"),
    ],
)
def test_synthetic_data_too_big_for_memory_is_refused_before_generating(capsys, tmp_path, setting, said):
    """1e9 synthetic users started generating and filled the machine's memory."""
    argv = [
        "data",
        "stats",
        "--config",
        TINY,
        "--set",
        setting,
        "--set",
        "data.synthetic_groups=1",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(said) and "choose a smaller size" in err and "Traceback" not in err
