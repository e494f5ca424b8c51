"""Shared fixtures: a tiny model config, synthetic data with planted per-user structure, and tiny trained
runs shared by the session."""

from __future__ import annotations

import os
import signal
import sys

import pytest

# A suite started in the background by a non-interactive shell (`bash launch/test.sh &`, nohup) inherits
# SIGINT ignored, and so would every process the tests start: the tests that play a user's Ctrl-C
# (reproduce's and serve's) then saw no interrupt and timed out. The terminal's default, for the session.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Undo a test's ``torch.set_num_threads``: the intra-op thread count changes how matmuls split their
    sums, so a later test comparing float32 numbers across processes or ranks would drift."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(before if before is not None else _DEFAULT_THREADS)


# torch's own default (one thread per core), known before any test changes it
_DEFAULT_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """``trained(*settings, features=False, ...)``: a tiny run trained once per session per distinct setting
    (tests/trained.py); shared, so read-only."""
    from trained import TrainedRuns

    return TrainedRuns(tmp_path_factory.mktemp("trained"))


@pytest.fixture
def tiny_cfg():
    from metarec_dist.config import load_config

    return load_config(
        None,
        [
            "model.hidden_size=16",
            "model.num_heads=2",
            "model.adapter_rank=2",
            "meta.meta_batch_size=8",
            "train.meta_steps=3",
            "train.log_every=1",
            "tasks.support_max=5",
            "tasks.query_size=3",
            "model.max_seq_len=16",
        ],
    )


@pytest.fixture
def synth_data():
    from metarec_dist.data.split import UserSplits
    from metarec_dist.data.synthetic import make_synthetic_sequences

    seqs = make_synthetic_sequences(num_users=60, num_items=40, num_groups=4, min_len=10, max_len=20, seed=1)
    return UserSplits(train=seqs[:48], valid=seqs[48:], test=[], num_items=40)


@pytest.fixture
def one_gpu(monkeypatch):
    """torch says it sees one CUDA device (nothing may run on it: there is none). The GPU paths' tests on a
    machine without one; ``gpu_fixtures.NO_GPU`` is what they say when torch sees none."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
