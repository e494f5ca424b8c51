"""YAML 1.1 numbers that do not mean what they say: ``010`` (octal 8) and ``12:30`` (base 60: 750) are an
error naming the key and line, in a config file and in a ``--set``, instead of a silently different value."""

from __future__ import annotations

import pytest

from metarec_dist.cli import main
from metarec_dist.config import load_config


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "model:\n  hidden_size: 32\n  num_layers: 010\n",
            "model.num_layers: 010 (line 3) is read by YAML 1.1 as octal 8; write 10, or quote it ('010') "
            "for text",
        ),
        (
            "train:\n  meta_steps: 12:30\n",
            "train.meta_steps: 12:30 (line 2) is read by YAML 1.1 as base-60 750 (like a time); write the "
            "number meant, or quote it ('12:30') for text",
        ),
        (
            "eval:\n  shots: [1, -010]\n",
            "eval.shots[1]: -010 (line 2) is read by YAML 1.1 as octal -8; write -10",
        ),
        ("optim:\n  lr: 1:30.5\n", "optim.lr: 1:30.5 (line 2) is read by YAML 1.1 as base-60 90.5"),
    ],
)
def test_a_yaml11_number_in_a_file_is_an_error_naming_key_and_line(tmp_path, capsys, text, said):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    assert main(["print-config", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: config file {p}: {said}") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("model.num_layers=010", "--set model.num_layers: 010 is read by YAML 1.1 as octal 8; write 10"),
        ("train.meta_steps=1:05", "--set train.meta_steps: 1:05 is read by YAML 1.1 as base-60 65"),
        ("model={num_layers: 012}", "--set model: num_layers: 012 (line 1) is read by YAML 1.1 as octal 10"),
    ],
)
def test_a_yaml11_number_in_a_set_is_an_error_naming_the_set(capsys, setting, said):
    assert main(["print-config", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {said}") and err.count("\n") == 1, err


def test_numbers_that_read_as_written_are_taken(tmp_path):
    """A leading zero that changes nothing (07), a quoted string, explicit 0x/0b and decimals are as ever."""
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  num_layers: 07\n  hidden_size: 0x40\nruntime:\n  run_name: '010'\n")
    cfg = load_config(p, ["train.meta_steps=1_000", "optim.lr=0.010", "model.num_heads=0b10"])
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.runtime.run_name) == (7, 64, "010")
    assert (cfg.train.meta_steps, cfg.model.num_heads) == (1000, 2)
    assert abs(cfg.optim.lr - 0.01) < 1e-12
