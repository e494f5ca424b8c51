"""`metarec train` sizes under the config's ceilings but over this machine's memory are refused in one line
naming the settings, before the model or a batch is made: model.max_seq_len=100000000 failed with torch's
allocator RuntimeError as a traceback, and meta.meta_batch_size=100000000 filled the machine's memory."""

from __future__ import annotations

import pytest
from trained import TINY, train_args

from metarec_dist import errors
from metarec_dist.cli import main


@pytest.fixture
def one_gib_free(monkeypatch):
    monkeypatch.setattr(errors, "available_bytes", lambda: 2**30)


def test_sizes_over_the_memory_are_refused_before_training(tmp_path, one_gib_free, capsys):
    assert main(train_args(tmp_path, "a", "model.max_seq_len=20000000")) == 2  # 3.2e8 params: 1.2 GiB
    err = capsys.readouterr().err
    assert err == (
        "error: model.hidden_size=16, model.num_layers=2, model.max_seq_len=20000000 with the data's 30 "
        "items (about 3.2e+08 parameters): the model's weights alone need 1.2 GiB of memory (4 bytes per "
        "parameter, fp32) and 1.0 GiB are available; choose a smaller size\n"
    )
    assert main(train_args(tmp_path, "b", "meta.meta_batch_size=2000000")) == 2  # x 9 tokens x 16: 1.1 GiB
    err = capsys.readouterr().err
    assert err.startswith(
        "error: meta.meta_batch_size=2,000,000 (2,000,000 tasks of 9 tokens per micro-batch) with "
        "model.hidden_size=16: one layer's hidden states alone need 1.1 GiB of memory"
    ), err
    assert not (tmp_path / "b" / "checkpoints").exists()


def test_bench_meta_step_checks_the_sizes_as_training_does(one_gib_free, monkeypatch, capsys):
    """It built the model and its data without the training checks (not even the size ceiling): a
    model.max_seq_len or data.synthetic_items too large was an allocator traceback or filled memory."""
    from metarec_dist.bench import meta_step

    def made(*args, **kwargs):
        raise AssertionError("data was made before the sizes were checked")

    monkeypatch.setattr(meta_step, "make_synthetic_sequences", made)
    args = ["bench", "meta-step", "--config", TINY, "--set", "model.hidden_size=16", "--set"]
    assert main([*args, "model.max_seq_len=20000000"]) == 2
    assert "the model's weights alone need 1.2 GiB" in capsys.readouterr().err
    assert main([*args, "data.synthetic_items=10000000000"]) == 2  # over the ceiling
    assert "over the 1e+11 accepted" in capsys.readouterr().err
