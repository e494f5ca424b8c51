"""The run folder's metrics.jsonl: every logged step as one JSON line, the curve of a run without W&B."""

from __future__ import annotations

import json
import math

from trained import local_config

from metarec_dist.config import LoggingConfig
from metarec_dist.metrics.loggers import METRICS_FILE, JsonlLogger, build_logger


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_logged_step_is_one_json_line_with_numbers_kept_and_nan_as_null(tmp_path):
    logger = JsonlLogger(tmp_path / METRICS_FILE)
    logger.log({"loss": 2.5, "tasks": 8, "val/ndcg@10@k1": math.nan, "algorithm": "fomaml"}, 10)
    table = [{"shots": 1, "ndcg@10": 0.25, "recall@10": math.inf}, {"shots": 3, "ndcg@10": 0.5}]
    logger.log({"loss": 2.25, "eval/cold_start_table": table, "where": tmp_path}, 20)
    logger.close()
    assert _lines(tmp_path / METRICS_FILE) == [
        {"step": 10, "loss": 2.5, "tasks": 8, "val/ndcg@10@k1": None, "algorithm": "fomaml"},
        {
            "step": 20,
            "loss": 2.25,
            "eval/cold_start_table": [
                {"shots": 1, "ndcg@10": 0.25, "recall@10": None},
                {"shots": 3, "ndcg@10": 0.5},
            ],
            "where": str(tmp_path),
        },
    ]
    again = JsonlLogger(tmp_path / METRICS_FILE)  # a resumed run appends to what it logged before
    again.log({"loss": 2.0}, 20)
    again.close()
    assert [row["step"] for row in _lines(tmp_path / METRICS_FILE)] == [10, 20, 20]


def test_the_file_is_made_by_the_first_line_only_and_only_for_a_local_run_folder(tmp_path):
    logger = build_logger(LoggingConfig(), "jl", str(tmp_path), {}, True, tmp_path)
    logger.close()  # nothing logged (a run refused at its resume): no file added to its folder
    assert not (tmp_path / METRICS_FILE).exists()
    for directory, is_main in ((None, True), (tmp_path, False)):  # no local folder; not rank 0
        other = build_logger(LoggingConfig(), "jl", str(tmp_path), {}, is_main, directory)
        other.log({"loss": 1.0}, 1)
        other.close()
    assert not (tmp_path / METRICS_FILE).exists()


def test_a_local_training_run_leaves_its_training_and_validation_curve(tmp_path):
    from metarec_dist.train.launch import train_local

    out = train_local(local_config(tmp_path, "jl", "train.meta_steps=4", "train.eval_every=2"))
    rows = _lines(tmp_path / "jl" / METRICS_FILE)
    assert out["run_path"] == str(tmp_path / "jl")
    assert [row["step"] for row in rows if "loss" in row] == [2, 4]
    validated = [row for row in rows if "val/ndcg@10@k3" in row]
    assert [row["step"] for row in validated][:2] == [2, 4]
    assert all(0.0 <= row["val/ndcg@10@k3"] <= 1.0 for row in validated)
