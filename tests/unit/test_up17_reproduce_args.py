"""``python -m metarec_dist.eval.reproduce`` (and ``launch/reproduce.sh``): a mistake in the options is one
``error:`` line naming the flag, found before anything trains, not after the last run (35 minutes on Amazon
Sports) or as a Python message that names no flag."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from metarec_dist.eval.publish import BEGIN, END
from metarec_dist.eval.reproduce import main

TINY = str(Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml")
METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20", "hr@10", "next_ndcg@10", "mrr")


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--seeds", "x"], "--seeds 'x': expected comma-separated integers, e.g. --seeds 0,1,2"),
        (["--seeds", "0,0"], "--seeds '0,0': a value is given twice"),
        (["--shots", "0,3"], "--shots '0,3': every value must be at least 1"),
        (["--jobs", "0"], "--jobs 0: must be at least 1"),
        (["--baseline", "sasrec"], "--baseline sasrec: not among the methods this run reports (a, popul"),
        (["--fuse", "b"], "--fuse b: not a --method NAME (the methods: a)"),
        (["--finetune", "b"], "--finetune b: not a --method NAME"),
        (["--pair", "a+cooc=a"], "--pair a+cooc: not among the methods this run reports"),
        (["--method", f"a={TINY}"], "--method: a NAME is given twice (a, a)"),
        (["--protocol", "mixed", "--baseline", "cooccurrence"], "--baseline cooccurrence: not among"),
    ],
)
def test_a_bad_option_is_one_line_before_any_training(tmp_path, capsys, extra, said):
    out = tmp_path / "out"
    assert main(["--method", f"a={TINY}", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {said}") and err.count("\n") == 1, err
    assert not out.exists()  # nothing trained


def test_a_page_whose_markers_do_not_pair_up_is_refused_before_training(tmp_path, capsys):
    """Replacing "from the first begin to the first end" on such a page would delete the prose between."""
    page = tmp_path / "page.md"
    page.write_text(f"intro\n{BEGIN}\nold\n\nhand-written notes\n{BEGIN}\nolder\n{END}\n")
    out = tmp_path / "out"
    assert main(["--method", f"a={TINY}", "--out", str(out), "--markdown", str(page)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --markdown {page}: its generated section's markers do not pair up (2 x ")
    assert not out.exists() and "hand-written notes" in page.read_text()


def _per_user(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {k: {m: rng.random(30) for m in METRICS} for k in (1, 3)}


def test_without_a_method_named_none_there_is_no_default_baseline(tmp_path, capsys):
    """The default ``--baseline`` is the method named ``none``; a run without one used to fail at the end
    (``baseline 'none' is not among the evaluated methods``), after training everything. Here the per-user
    results of the "earlier run" are given (``--collect``), so nothing trains."""
    out = tmp_path / "out"
    (out / "per_user").mkdir(parents=True)
    sets = ["data.synthetic_users=120", "eval.n_boot=20"]
    info = {"seed": 0, "config": TINY, "overrides": sets, "adaptation": {"steps": 0, "inner_lr": 0.5}}
    (out / "per_user" / "a-s0.pkl").write_bytes(pickle.dumps({"a": (_per_user(0), info)}))
    args = ["--method", f"a={TINY}", "--out", str(out), "--seeds", "0", "--shots", "1,3", "--collect"]
    assert main([*args, *(f"--set={s}" for s in sets)]) == 0, capsys.readouterr().err
    text = (out / "results.md").read_text()
    assert "| a |" in text and "Paired difference" not in text


def test_a_call_that_reused_every_run_does_not_claim_the_reproduction_runtime(tmp_path, capsys):
    """``--reuse`` with every run's per-user results in --out trains nothing: the page said "Runtime of the
    whole reproduction: 0.1 min" (as several published sections still do)."""
    out = tmp_path / "out"
    (out / "per_user").mkdir(parents=True)
    sets = ["data.synthetic_users=120", "eval.n_boot=20"]
    info = {"seed": 0, "config": TINY, "overrides": sets, "adaptation": {"steps": 0, "inner_lr": 0.5}}
    (out / "per_user" / "a-s0.pkl").write_bytes(pickle.dumps({"a": (_per_user(0), info)}))
    args = ["--method", f"a={TINY}", "--out", str(out), "--seeds", "0", "--shots", "1,3", "--reuse"]
    assert main([*args, "--jobs", "1", *(f"--set={s}" for s in sets)]) == 0, capsys.readouterr().err
    text = (out / "results.md").read_text()
    assert "Published from earlier runs' per-user results (--reuse, nothing trained) in " in text
    assert "Runtime of the whole reproduction" not in text


def test_a_partly_reused_call_says_how_many_runs_it_trained():
    from metarec_dist.eval.publish import runtime_line

    assert runtime_line({"runtime_s": 120, "reused_runs": [2, 3]}) == (
        "Runtime of this call: 2.0 min, training 1 of the 3 runs (the others' per-user results reused from "
        "an earlier call, --reuse)."
    )
    assert runtime_line({"runtime_s": 120}) == "Runtime of the whole reproduction: 2.0 min."


def test_an_out_folder_with_yaml_characters_is_kept_whole(tmp_path):
    """The run folder is set as a path, not as YAML text: " #" would start a comment, ": " a mapping."""
    from metarec_dist.eval.reproduce import RunSpec, spec_config

    out = tmp_path / "trial #2: tiny"
    cfg = spec_config(RunSpec("sasrec", "configs/tiny.yaml", 3, False), out)
    assert cfg.runtime.storage_path == str(out / "runs")
    assert cfg.train.seed == 3


def test_reproduce_protocol_help_shows_the_config_spelling(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "{cold_start,new_items,mixed}" in text and "new-items" not in text
