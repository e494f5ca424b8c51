"""End to end: `metarec serve` of a model with user features answers a stated value outside the training
vocabulary with a ``notes`` field naming it and known values (the client's typo is seen by the client), and
an unknown feature name with a 400 naming the declared ones."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_serve import call

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from feature_data import feature_config  # noqa: E402
from trained import SMALL  # noqa: E402

from metarec_dist import checkpoint as ckpt  # noqa: E402
from metarec_dist.bench.serve_bench import free_port, start_server, stop_server  # noqa: E402
from metarec_dist.data import prepare_data  # noqa: E402
from metarec_dist.runtime.context import LocalContext  # noqa: E402
from metarec_dist.train.trainer import MetaTrainer  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_serve_answers_a_note_for_an_unknown_feature_value(tmp_path):
    cfg = feature_config(tmp_path, [*SMALL])
    data = prepare_data(cfg.data).user_splits()
    out = MetaTrainer(cfg, LocalContext(tmp_path / "run"), data).fit()
    export = ckpt.export(Path(out["checkpoint"]), tmp_path / "export")
    port = free_port()
    proc, lines, _ = start_server(str(export), port)
    try:
        url = f"http://127.0.0.1:{port}/recommend"
        status, answer = call(url, {"user": {"age": "24", "occupation": "astronaut"}, "k": 3})
        assert status == 200 and len(answer["items"]) == 3
        assert answer["notes"] == [
            "\"user\" occupation='astronaut': not in the training vocabulary, read as unknown "
            "(known values: job0, job1, job2, job3)"
        ]
        status, answer = call(url, {"user": {"age": "24", "occupation": "job1"}, "k": 3})
        assert status == 200 and "notes" not in answer
        status, answer = call(url, {"user": {"ocupation": "job1"}})
        assert status == 400 and answer["error"] == (
            "\"user\": unknown user feature 'ocupation'; the declared ones are: age, gender, occupation"
        )
    finally:
        stop_server(proc)
    assert not any("astronaut" in line for line in lines)  # the client's text is not in the server's log
