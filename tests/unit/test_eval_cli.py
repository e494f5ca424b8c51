"""``metarec evaluate`` / ``recommend`` on tiny checkpoints (2 meta-steps, synthetic data), trained once per
session by tests/trained.py."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest

from metarec_dist.cli import main


@pytest.fixture(scope="module")
def runs(trained):
    return {
        "a": trained().folder,
        "b": trained(replica=1).folder,  # same seed as "a", trained separately
        "none": trained("meta.algorithm=none").folder,
    }


def _evaluate(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "eval.json"
    assert main(["evaluate", *args, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def _strip_paths(doc: dict) -> dict:
    for m in doc["methods"].values():
        m["info"].pop("checkpoint", None)
    return doc


@pytest.fixture(scope="module")
def table_a(runs, tmp_path_factory) -> tuple[dict, str]:
    """``metarec evaluate`` of run "a" with the defaults: its JSON and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        doc = _evaluate(tmp_path_factory.mktemp("eval-a"), "--checkpoint", str(runs["a"]))
    return doc, printed.getvalue()


def test_evaluate_reports_every_metric_with_intervals(table_a):
    doc, printed = table_a
    assert set(doc["methods"]) == {"fomaml", "popularity", "cooccurrence"} and doc["split"] == "test"
    row = doc["methods"]["fomaml"]["metrics"]["3"]
    assert set(row) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20", "hr@10", "next_ndcg@10", "mrr"}
    assert row["ndcg@10"]["lo"] <= row["ndcg@10"]["mean"] <= row["ndcg@10"]["hi"]
    assert doc["methods"]["fomaml"]["info"]["adaptation"]["selected_on"] == "valid"
    assert "K=3" in printed


def test_same_seed_gives_the_same_table(runs, table_a, tmp_path):
    a = copy.deepcopy(table_a[0])
    b = _evaluate(tmp_path, "--checkpoint", str(runs["b"]))  # trained separately with the same seed
    assert _strip_paths(a) == _strip_paths(b)


def test_smaller_user_batches_give_the_same_table(runs, table_a, tmp_path, capsys):
    """--batch-users (more units of work for --workers, less memory) changes where users are scored, not
    what they score: the same choices and metrics as the default batches, to float rounding."""
    doc = _evaluate(tmp_path, "--checkpoint", str(runs["a"]), "--batch-users", "3")
    for name, method in table_a[0]["methods"].items():
        assert doc["methods"][name]["info"].get("adaptation") == method["info"].get("adaptation")
        for k, row in method["metrics"].items():
            for metric, value in row.items():
                assert doc["methods"][name]["metrics"][k][metric]["mean"] == pytest.approx(
                    value["mean"], abs=1e-6
                )
    assert main(["evaluate", "--checkpoint", str(runs["a"]), "--batch-users", "0"]) == 2
    assert "--batch-users must be >= 1" in capsys.readouterr().err


def test_finetune_on_a_model_that_adapts_is_refused_not_ignored(runs, capsys):
    for command in (["evaluate"], ["recommend", "--items", "1,2"]):
        assert main([*command, "--checkpoint", str(runs["a"]), "--finetune"]) == 2
        assert "--finetune: this model (meta.algorithm=fomaml) adapts at test time already" in (
            capsys.readouterr().err
        )


def test_adaptation_is_tuned_on_validation_users_only(runs, tmp_path, monkeypatch):
    from metarec_dist.data import prepare_data
    from metarec_dist.eval.loading import load_model
    from metarec_dist.eval.protocol import ColdStartProtocol

    seen = []
    real = ColdStartProtocol.batches

    def spy(self, users, *args, **kwargs):
        seen.append(users)
        return real(self, users, *args, **kwargs)

    # Every pass over users builds its batches here: the grid's (all its points in one pass) and each
    # scored method's.
    monkeypatch.setattr(ColdStartProtocol, "batches", spy)
    doc = _evaluate(tmp_path, "--checkpoint", str(runs["none"]), "--finetune")
    prepared = prepare_data(load_model(runs["none"]).cfg.data)
    valid, test = prepared.sequences("valid"), prepared.sequences("test")

    def same(a, b):
        return len(a) == len(b) and all(map(np.array_equal, a, b))

    # The grid is scored on validation users; then the model and the two baselines on test users.
    tuning, scored = seen[:-3], seen[-3:]
    assert len(tuning) >= 1 and doc["methods"]["none+finetune"]["info"]["adaptation"]["grid_size"] > 1
    assert all(same(u, valid) for u in tuning) and all(same(u, test) for u in scored)
    assert not any(np.array_equal(s, t) for s in valid for t in test if len(s) == len(t))


def test_baseline_gives_paired_intervals_and_none_does_not_adapt(runs, tmp_path):
    doc = _evaluate(tmp_path, "--checkpoint", str(runs["a"]), "--baseline", str(runs["none"]), "--shots", "3")
    assert doc["methods"]["none"]["info"]["adaptation"]["steps"] == 0
    assert doc["methods"]["none"]["info"]["adaptation"]["selected_on"] == "fixed"
    d = doc["paired"]["fomaml"]["diff"]["3"]["ndcg@10"]
    assert d["lo"] <= d["diff"] <= d["hi"] and doc["paired"]["fomaml"]["baseline"] == "none"


def test_recommend_prints_top_k_raw_ids(runs, capsys):
    from metarec_dist.data import prepare_data
    from metarec_dist.eval.loading import load_model

    raw = prepare_data(load_model(runs["a"]).cfg.data).item_raw_ids
    assert (
        main(["recommend", "--checkpoint", str(runs["a"]), "--items", f"{raw[0]},{raw[4]}", "--k", "4"]) == 0
    )
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()[:2].rstrip(".").isdigit()]
    assert len(lines) == 4
    shown = {ln.split()[1] for ln in lines}
    assert shown <= set(raw) and not shown & {raw[0], raw[4]}  # history items are never recommended


@pytest.mark.parametrize(
    "items,message", [("999999", "unknown item id"), ("1,,2", "comma-separated"), ("", "comma-separated")]
)
def test_recommend_bad_items_is_one_clear_error(runs, capsys, items, message):
    assert main(["recommend", "--checkpoint", str(runs["a"]), "--items", items]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


@pytest.mark.parametrize("lr", ["nan", "inf", "-1"])
def test_a_fixed_inner_lr_that_is_not_finite_names_the_option(runs, capsys, lr):
    args = ["--checkpoint", str(runs["a"]), "--steps", "1", f"--inner-lr={lr}"]
    for command in (["recommend", "--items", "1", *args], ["evaluate", *args]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --inner-lr must be a finite number >= 0"), err


def test_not_a_checkpoint_is_one_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path)]) == 2
    assert "not a checkpoint" in capsys.readouterr().err


def test_catalogue_prefers_stored_raw_ids_and_falls_back_to_model_ids(runs, monkeypatch):
    from metarec_dist.data import prepare_data
    from metarec_dist.eval import recommend as rec
    from metarec_dist.eval.loading import load_model

    loaded = load_model(runs["a"])
    n = int(loaded.meta["num_items"])
    raw = prepare_data(loaded.cfg.data).item_raw_ids

    def no_data(cfg):
        raise ValueError("data not here")

    monkeypatch.setattr(rec, "load_prepared", no_data)
    stored = rec.load_catalogue(loaded)  # the checkpoint carries the raw ids: no data needed
    assert stored.mapped and stored.raw_ids == list(raw)
    assert stored.to_model_ids([raw[0], raw[4]]) == [1, 5]
    del loaded.meta["item_raw_ids"]
    fallback = rec.load_catalogue(loaded)  # no data, no stored ids: model ids
    assert not fallback.mapped and fallback.to_model_ids(["1", str(n)]) == [1, n]
    with pytest.raises(ValueError, match="model's own"):
        fallback.to_model_ids([str(n + 1)])


def test_a_missing_baseline_is_named_before_any_work(runs, tmp_path, capsys):
    missing = tmp_path / "nothere"
    assert main(["evaluate", "--checkpoint", str(runs["a"]), "--baseline", str(missing)]) == 2
    assert capsys.readouterr().err == f"error: --baseline {missing}: no such folder\n"


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("new_items", "new-items"),
        ("new-items", "new-items"),
        ("cold-start", "cold_start"),
        ("cold_start", "cold_start"),
        ("loo", "loo"),
        ("mixed", "mixed"),
    ],
)
def test_evaluate_protocol_takes_the_configs_spelling_too(given, parsed):
    from metarec_dist.cli import build_parser

    args = build_parser().parse_args(["evaluate", "--checkpoint", "x", "--protocol", given])
    assert args.protocol == parsed


def test_evaluate_protocol_still_refuses_an_unknown_one(capsys):
    from metarec_dist.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--checkpoint", "x", "--protocol", "new_users"])
    err = capsys.readouterr().err
    assert "invalid choice: 'new_users' (choose from 'cold_start', 'loo', 'new_items', 'mixed')" in err


def test_evaluate_help_shows_one_spelling_of_the_protocols():
    """The choices mixed spellings (cold_start, new-items); data.protocol says new_items: --help shows that
    one (new-items is still taken, see above)."""
    from metarec_dist.cli import build_parser

    parser = build_parser()
    evaluate = parser._subparsers._group_actions[0].choices["evaluate"]
    text = evaluate.format_help()
    assert "--protocol {cold_start,loo,new_items,mixed}" in text
    assert "new-items" not in text and "cold-start" not in text


@pytest.mark.parametrize(("steps", "said"), [("1", "1 adaptation step,"), ("2", "2 adaptation steps,")])
def test_recommend_counts_its_adaptation_steps_in_words(runs, capsys, steps, said):
    from metarec_dist.data import prepare_data
    from metarec_dist.eval.loading import load_model

    raw = prepare_data(load_model(runs["a"]).cfg.data).item_raw_ids
    args = ["recommend", "--checkpoint", str(runs["a"]), "--items", raw[0], "--k", "2", "--steps", steps]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert said in out and "top 2 after 1 item (" in out  # one history item: not "1 items"


def test_reproduce_help_says_the_whole_first_paragraph(capsys):
    from metarec_dist.eval.reproduce import main as reproduce

    with pytest.raises(SystemExit) as done:
        reproduce(["--help"])
    assert done.value.code == 0
    assert "and write the JSON summary, the NDCG@10-vs-K plot and the tables." in " ".join(
        capsys.readouterr().out.split()
    )


def test_reproduce_sh_help_lists_the_options_it_passes_through():
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # python3: this one
    out = subprocess.run(
        ["bash", "launch/reproduce.sh", "--help"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "bash launch/reproduce.sh ml100k|amazon-sports" in out.stdout
    assert "--method" in out.stdout and "--seeds" in out.stdout and "--protocol" in out.stdout


def test_help_reads_as_plain_text_and_names_what_each_option_takes(capsys):
    """`metarec --help` showed the module docstring's reST (``metarec``); evaluate's options showed their
    dest (--json JSON, --workers WORKERS) where README and `metarec train` say FILE and N; recommend hid
    --k's default."""
    from metarec_dist.cli import build_parser

    parser = build_parser()
    assert "``" not in parser.format_help()
    for argv in (["evaluate", "--help"], ["recommend", "--help"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    text = " ".join(capsys.readouterr().out.split())
    for said in ("--json FILE", "--workers N", "--batch-users N", "--n-boot N", "--baseline CHECKPOINT"):
        assert said in text
    assert "how many items to recommend (default: 10)" in text


def test_serve_and_data_download_help_name_what_each_option_takes_and_its_default(capsys):
    """`serve --port`, `serve --replicas` and `data download --data-dir` had no help nor default text."""
    from metarec_dist.cli import build_parser

    parser = build_parser()
    for argv in (["serve", "--help"], ["data", "download", "--help"], ["bench", "data", "--help"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    text = " ".join(capsys.readouterr().out.split())
    for said in (
        "--port PORT HTTP port (default: 8000)",
        "--replicas N copies of the model answering requests (default: 1)",
        "--data-dir DIR where to unpack it (default: $METAREC_DATA_DIR, else ~/.cache/metarec)",
        "--json [FILE] also write the result as JSON to FILE",
    ):
        assert said in text, said
