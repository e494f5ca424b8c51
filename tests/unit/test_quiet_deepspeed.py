"""DeepSpeed's known-harmless chatter is silenced precisely: a ZeRO-3 run and the reading of its checkpoint
show none of it, and any other warning or log line still gets through.

The DeepSpeed runs are in fresh interpreters (one process group per process; DeepSpeed's log handler keeps
the stdout of its first import, which must not be pytest's capture)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from trained import train_args

from metarec_dist.runtime.quiet import (
    DEEPSPEED_LOGGER,
    filter_training_chatter,
)

ROOT = Path(__file__).resolve().parents[2]
GROUP = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")
COLLECTIVES = ("all_gather_into_tensor", "reduce_scatter_tensor")
OUTPUT_TYPE = "unknown inputs or outputs type"
CPU_NOTE = "Setting accelerator to CPU"  # DeepSpeed's auto-detection finding no GPU
CONSOLIDATION = (
    "Processing zero checkpoint",
    "Gathering sharded weights",
    "Loading checkpoint shards",
    "fp32 state dict",
    "Setting accelerator to CPU",
)


def _metarec(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in GROUP}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "metarec_dist.cli", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A 2-step ZeRO-3 training of the tiny model in one process: its output and its run folder."""
    root = tmp_path_factory.mktemp("zero3")
    out = _metarec(*train_args(root, "z3", "runtime.deepspeed=true", "runtime.zero_stage=3"))
    return out, root / "z3"


def test_zero3_training_shows_no_known_harmless_warnings(zero3_run):
    out, _ = zero3_run
    shown = out.stdout + out.stderr
    for text in (*COLLECTIVES, OUTPUT_TYPE, CPU_NOTE):
        assert text not in shown, f"{text!r} still printed:\n{shown[-3000:]}"
    assert "== metarec train: summary ==" in out.stdout


def test_reading_a_zero3_checkpoint_prints_no_consolidation_chatter(zero3_run, tmp_path):
    """export, evaluate, recommend and init_from all read ZeRO shards through the same consolidation."""
    _, folder = zero3_run
    out = _metarec("export", "--checkpoint", str(folder), "--out", str(tmp_path / "export"))
    assert out.stdout.splitlines() == [f"exported step 2 (30 items) to {tmp_path / 'export'}"], out.stdout
    for text in CONSOLIDATION:
        assert text not in out.stdout + out.stderr, f"{text!r} still printed:\n{out.stderr[-3000:]}"


def _warn(message: str, module: str) -> None:
    warnings.warn_explicit(message, FutureWarning, "c10d_logger.py", 83, module=module)


def test_the_training_filter_drops_exactly_the_known_messages(caplog):
    """Only the two deprecated collectives (from torch.distributed) and the MetaStepOutput note are
    dropped: another FutureWarning, the same text from elsewhere and other DeepSpeed warnings still show."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        filter_training_chatter()
        filter_training_chatter()  # idempotent
        for name in COLLECTIVES:
            _warn(
                f"`torch.distributed.{name}` is deprecated. Please use ...", "torch.distributed.c10d_logger"
            )
        _warn("`torch.distributed.all_reduce_coalesced` is deprecated.", "torch.distributed.c10d_logger")
        _warn("`torch.distributed.all_gather_into_tensor` is deprecated.", "metarec_dist.something")
    assert [str(w.message) for w in seen] == [
        "`torch.distributed.all_reduce_coalesced` is deprecated.",
        "`torch.distributed.all_gather_into_tensor` is deprecated.",
    ]
    logger = logging.getLogger(DEEPSPEED_LOGGER)
    unknown = "A module has unknown inputs or outputs type (<class '{}'>) and the tensors ..."
    note, other = unknown.format("metarec_dist.meta.algorithms.MetaStepOutput"), unknown.format("a.Else")
    logger.setLevel(logging.WARNING)
    logger.addHandler(caplog.handler)  # DeepSpeed's own logger does not propagate to the root's capture
    logger.propagate, propagate = False, logger.propagate
    try:
        logger.warning(note)
        logger.warning(other)
        logger.error("a real DeepSpeed error")
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate
    assert [r.getMessage() for r in caplog.records] == [other, "a real DeepSpeed error"]


DETECTION = """
import os, sys
from metarec_dist.runtime.deepspeed_engine import select_cpu_accelerator
if sys.argv[1] == "cpu":
    select_cpu_accelerator()  # a run with runtime.use_gpu=false
from deepspeed.accelerator import get_accelerator
from deepspeed.utils import logger
print("accelerator", get_accelerator().device_name(), "DS_ACCELERATOR" in os.environ, flush=True)
logger.warning("another DeepSpeed warning")
"""


@pytest.mark.parametrize("run", ["cpu", "auto"])
def test_a_cpu_run_names_the_cpu_accelerator_and_other_warnings_still_show(run):
    """A CPU run names DeepSpeed's CPU accelerator (DS_ACCELERATOR for the import only, not left to child
    processes), so the auto-detection's note is not printed; detection left to DeepSpeed (a GPU run, on this
    GPU-less machine) still prints it, and DeepSpeed's other warnings pass either way."""
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-c", DETECTION, run]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    shown = out.stdout + out.stderr
    assert "accelerator cpu False" in out.stdout, shown
    assert "another DeepSpeed warning" in shown, shown
    assert (CPU_NOTE in shown) == (run == "auto"), shown
