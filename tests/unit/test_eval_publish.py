"""Reports: the terminal table, the JSON summary with paired diffs, the plot and the Markdown section."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from metarec_dist.eval.publish import BEGIN, END, publish
from metarec_dist.eval.report import build_report, format_table
from metarec_dist.eval.stats import MethodResult, mean_over_seeds

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "hr@10", "next_ndcg@10", "mrr")


def _per_user(seed: int, shift: float) -> dict:
    rng = np.random.default_rng(seed)
    return {k: {m: np.clip(rng.random(40) * 0.5 + shift, 0, 1) for m in METRICS} for k in (1, 3)}


def _results() -> list[MethodResult]:
    none = mean_over_seeds("none", [_per_user(s, 0.0) for s in range(3)], {"per_seed": []})
    fomaml = mean_over_seeds("fomaml", [_per_user(s + 10, 0.1) for s in range(3)], {"per_seed": []})
    return [fomaml, none]


def test_same_inputs_give_the_same_report_and_table():
    a, b = build_report(_results(), "none", n_boot=100), build_report(_results(), "none", n_boot=100)
    assert a == b and format_table(a) == format_table(b)
    assert "fomaml - none: NDCG@10" in format_table(a)


def test_publish_writes_json_plot_and_keeps_the_prose_around_the_tables(tmp_path):
    md = tmp_path / "results.md"
    md.write_text(f"# Results\n\nintro\n\n{BEGIN}\nold table\n{END}\n\nclosing words\n")
    paths = tmp_path / "r.json", tmp_path / "p.png"
    publish(_results(), "none", 100, *paths, md, {"runtime_s": 60.0})
    text = md.read_text()
    assert text.startswith("# Results\n\nintro") and text.rstrip().endswith("closing words")
    assert "old table" not in text and "| fomaml |" in text and text.count(BEGIN) == 1
    doc = json.loads(paths[0].read_text())
    cell = doc["summary"]["fomaml"]["3"]
    assert {"ndcg@10", "recall@10", "vs_none"} <= set(cell) and "seed_sd" in cell["ndcg@10"]
    assert cell["vs_none"]["ndcg@10"]["diff"] > 0 and "vs_none" not in doc["summary"]["none"]["3"]
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Runtime of the whole reproduction: 1.0 min." in text


def test_a_collected_table_does_not_claim_the_reproduction_runtime(tmp_path):
    """``--collect`` trains nothing: its minute is not the reproduction's runtime."""
    md = tmp_path / "results.md"
    md.write_text(f"{BEGIN}\n{END}\n")
    publish(_results(), "none", 100, tmp_path / "r.json", None, md, {"runtime_s": 60.0, "collected": True})
    text = md.read_text()
    assert "Runtime of the whole reproduction" not in text
    assert "Collected from earlier runs' per-user results (--collect, nothing trained) in 1.0 min." in text


def test_a_json_report_that_cannot_be_written_is_a_user_error_naming_the_file(tmp_path):
    """After a whole evaluation, an OSError from the write (here a file where a folder should be) said only
    "[Errno 20] Not a directory: '<temp file>'"; it names the report's path instead."""
    from metarec_dist.errors import UserError
    from metarec_dist.eval.report import write_json

    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "report.json"
    with pytest.raises(UserError, match=rf"^{re.escape(str(target))}: cannot write the JSON file there \("):
        write_json({"a": 1}, target)
    write_json({"a": 1.5}, tmp_path / "ok.json")
    assert json.loads((tmp_path / "ok.json").read_text()) == {"a": 1.5}
