"""``metarec bench``: what docs/benchmarks.md says of every figure (the command, the machine, the load) is in
the program's own output, and the documented commands run what the docs describe."""

from __future__ import annotations

import inspect
import json

import pytest

from metarec_dist.bench.meta_step import run_meta_step_bench
from metarec_dist.cli import build_parser, main


def test_a_bench_result_records_its_command_machine_and_load(capsys):
    argv = ["bench", "data", "--interactions", "1000", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bench"] == "data" and result["command"] == "metarec " + " ".join(argv)
    assert result["machine"]["cpus"] >= 1 and result["machine"]["torch"] and result["machine"]["ray"]
    assert len(result["load_before"]) == len(result["load_after"]) == 3
    assert result["tasks_per_s"] > 0  # the benchmark's own figures are still there


def test_meta_step_repeats_as_documented():
    """docs/benchmarks.md: "Medians of 20 interleaved repetitions" for `metarec bench meta-step --config ...`
    with no --repeats (the CLI's default was 10)."""
    args = build_parser().parse_args(["bench", "meta-step", "--config", "configs/tiny.yaml"])
    assert args.repeats == inspect.signature(run_meta_step_bench).parameters["repeats"].default == 20


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "meta-step", "--config", "configs/tiny.yaml", "--repeats", "0"],
        ["bench", "system", "--config", "configs/tiny.yaml", "--steps", "0"],
        ["bench", "data", "--interactions", "0"],
        ["bench", "scale", "--interactions", "10"],
    ],
)
def test_a_size_a_bench_cannot_run_names_its_flag(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"error: {argv[-2]} must be >= {1000 if argv[-2] == '--interactions' else 1}, got {argv[-1]}"
    )


def test_bench_json_takes_a_file_as_train_and_evaluate_do(tmp_path, capsys):
    """`bench ... --json` was on/off (one JSON line) while `train`/`evaluate --json` take a FILE: a FILE is
    now written (and checked before the benchmark runs); a bare --json still prints one line."""
    out = tmp_path / "bench.json"
    assert main(["bench", "data", "--interactions", "1000", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert json.loads(out.read_text())["bench"] == "data" and json.loads(printed)["bench"] == "data"
    assert main(["bench", "data", "--json", "--interactions", "1000"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1
    # Missing folders are created, as `metarec evaluate --json` creates them (they were "create it first").
    missing = tmp_path / "no" / "such" / "bench.json"
    assert main(["bench", "data", "--interactions", "1000", "--json", str(missing)]) == 0
    assert json.loads(missing.read_text())["bench"] == "data"
