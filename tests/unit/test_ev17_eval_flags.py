"""``metarec evaluate`` / ``recommend`` options that have no meaning for the model or protocol asked are
refused with one line naming the flag, not silently ignored (a new-user pass, session 17)."""

from __future__ import annotations

import json

import pytest

from metarec_dist.cli import main


@pytest.fixture(scope="module")
def runs(trained):
    loo = ["data.synthetic_users=60", "tasks.support_max=10", "tasks.query_size=5", "data.protocol=loo"]
    return {
        "a": trained().folder,
        "none": trained("meta.algorithm=none").folder,
        "loo": trained(*loo, "meta.algorithm=sasrec", "train.eval_every=1").folder,
    }


@pytest.mark.parametrize("flag", ["--no-mask-seen", "--mask-seen"])
def test_mask_seen_outside_leave_one_out_is_refused_not_ignored(runs, capsys, flag):
    assert main(["evaluate", "--checkpoint", str(runs["a"]), flag]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}: only the leave-one-out protocol") and "cold_start" in err
    assert "Traceback" not in err


def test_mask_seen_under_leave_one_out_is_still_taken(runs, tmp_path):
    out = tmp_path / "loo.json"
    args = ["evaluate", "--checkpoint", str(runs["loo"]), "--no-mask-seen", "--n-boot", "5"]
    assert main([*args, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["mask_seen"] is False


@pytest.mark.parametrize("command", [["evaluate"], ["recommend", "--items", "1,2"]])
def test_steps_on_a_model_that_does_not_adapt_needs_finetune(runs, capsys, command):
    """``--steps 2`` on ``none``/``sasrec`` fine-tuned the model while the report still named it ``none``."""
    args = [*command, "--checkpoint", str(runs["none"]), "--steps", "2", "--inner-lr", "0.1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --steps 2: this model (meta.algorithm=none) does not adapt") and (
        "--finetune" in err
    )


def test_steps_zero_or_with_finetune_is_accepted_on_a_model_that_does_not_adapt(runs, tmp_path):
    out = tmp_path / "ft.json"
    base = ["evaluate", "--checkpoint", str(runs["none"]), "--shots", "1", "--n-boot", "5"]
    assert main([*base, "--finetune", "--steps", "2", "--inner-lr", "0.1", "--json", str(out)]) == 0
    method = json.loads(out.read_text())["methods"]["none+finetune"]
    assert method["info"]["adaptation"]["steps"] == 2
    assert main([*base, "--steps", "0", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["methods"]["none"]["info"]["adaptation"]["steps"] == 0


def test_a_baseline_of_another_protocol_is_named_before_the_first_evaluation(runs, capsys, monkeypatch):
    from metarec_dist.eval.protocol import ColdStartProtocol

    def fail(*args, **kwargs):
        raise AssertionError("the evaluated model was scored before --baseline was checked")

    monkeypatch.setattr(ColdStartProtocol, "evaluate", fail)
    assert main(["evaluate", "--checkpoint", str(runs["loo"]), "--baseline", str(runs["a"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --baseline {runs['a']}: not comparable under loo")
    assert "Traceback" not in err


def test_recommend_on_a_leave_one_out_model_reads_its_evaluation_window(runs, capsys, monkeypatch):
    """A ``loo`` model is evaluated on the last ``model.max_seq_len - 1`` items (15 here); recommend read
    only ``tasks.support_max`` (10) of them, so it ranked from another input than the one evaluated."""
    from metarec_dist.eval import recommend as rec
    from metarec_dist.eval.loading import load_model

    loaded = load_model(runs["loo"])
    assert loaded.cfg.tasks.support_max == 10 and rec.history_window(loaded.cfg) == 15
    read = []
    real = rec.prefix_batch

    def spy(sequences, *args, **kwargs):
        read.append(len(sequences[0]))
        return real(sequences, *args, **kwargs)

    monkeypatch.setattr(rec, "prefix_batch", spy)
    raw = rec.load_catalogue(loaded).raw_ids
    args = ["recommend", "--checkpoint", str(runs["loo"]), "--k", "3", "--items"]
    assert main([*args, ",".join(raw[:12])]) == 0
    assert read == [12] and "note:" not in capsys.readouterr().err
    assert main([*args, ",".join(raw[:20])]) == 0
    assert read == [12, 15]
    assert "reads the most recent 15 (model.max_seq_len - 1" in capsys.readouterr().err


def test_a_long_history_prints_its_most_recent_titles_only():
    """``recommend`` printed every title of the history: 1,500 items gave a 40 kB line."""
    from metarec_dist.eval.cli import HISTORY_SHOWN, history_line

    raw = [str(i) for i in range(1, 1501)]
    line = history_line(raw, list(range(1, 1501)), {i: f"T{i}" for i in range(1, 1501)})
    assert line.startswith(f"history (1500 items, the last {HISTORY_SHOWN} shown): T1481; ")
    assert line.endswith("; T1500") and "T1480;" not in line
    assert history_line(["7", "x"], [7, 8], {7: "Seven"}) == "history: Seven; x"


def test_recommend_help_does_not_promise_a_validation_search(capsys):
    """recommend has no validation users: its --steps/--finetune help said "skips the validation search"
    and "tuned on valid", which only evaluate does."""
    import re

    with pytest.raises(SystemExit):
        main(["recommend", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "validation search" not in text and "tuned on valid" not in text
    assert (
        "default: the adaptation an export records (see metarec export --help), else the steps the run "
        "validated with (train.eval_steps) where it set them, else the trained meta.adaptation_steps" in text
    )
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "skips the validation search" in text and "tuned on valid" in text


def test_a_wrong_split_fails_before_the_model_is_loaded(capsys, monkeypatch, tmp_path):
    """``--split train`` was refused only after the model and the whole data set were loaded (12 s on
    MovieLens 100K); now argparse refuses it, naming the choices."""
    from metarec_dist.eval import loading

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before --split was checked")

    monkeypatch.setattr(loading, "load_model", fail)
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--checkpoint", str(tmp_path), "--split", "train"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--split: invalid choice: 'train'" in err and "'valid'" in err and "Traceback" not in err


def test_evaluating_a_fused_export_without_fuse_says_recommend_ranks_otherwise(runs, tmp_path, capsys):
    """A fused export of a run without eval.fuse was evaluated as the model alone without a word, while
    recommend on the same export fuses: the table was not what the export serves."""
    out = tmp_path / "fused"
    assert main(["export", "--checkpoint", str(runs["a"]), "--out", str(out), "--fuse-weight", "1"]) == 0
    capsys.readouterr()
    base = ["evaluate", "--checkpoint", str(out), "--shots", "1", "--n-boot", "5", "--steps", "0"]
    assert main(base) == 0
    assert "is a fused export (weight 1), which recommend and serve apply" in capsys.readouterr().err
    assert main([*base, "--no-fuse"]) == 0
    assert "fused export" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["evaluate", "--shots", "1,x"], "--shots '1,x': expected comma-separated positive ints"),
        (["evaluate", "--shots", "0"], "--shots '0': shot counts must be >= 1"),
        (["evaluate", "--steps", "-1"], "--steps must be in [0, 1000] (got -1)"),
        (["recommend", "--items", "1", "--steps", "-1"], "--steps must be in [0, 1000] (got -1)"),
        # 10**11 test-time steps made recommend hang (each a forward and backward pass)
        (["recommend", "--items", "1", "--steps", "100000000000"], "--steps must be in [0, 1000] (got 1000"),
        (["evaluate", "--inner-lr", "0.1"], "--inner-lr fixes the adaptation: give --steps N (>= 0) with it"),
        (["recommend", "--items", "1", "--steps", "1", "--inner-lr=nan"], "--inner-lr must be a finite"),
    ],
)
def test_malformed_shots_and_steps_fail_before_loading(capsys, monkeypatch, tmp_path, command, said):
    """These were refused only after the model and the data were loaded (8-13 s on MovieLens 100K)."""
    from metarec_dist.eval import loading

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the flags were checked")

    monkeypatch.setattr(loading, "load_model", fail)
    assert main([*command, "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {said}") and "Traceback" not in err


def test_the_report_says_how_many_validation_users_the_adaptation_was_chosen_on(runs, tmp_path):
    """It said ``selected_on: valid`` without how many (eval.tune_users of them, or all)."""
    from metarec_dist.data import prepare_data
    from metarec_dist.eval.loading import load_model

    valid = len(prepare_data(load_model(runs["a"]).cfg.data).sequences("valid"))
    out = tmp_path / "eval.json"
    base = ["evaluate", "--checkpoint", str(runs["a"]), "--shots", "1", "--n-boot", "5", "--json", str(out)]
    assert main(base) == 0
    assert json.loads(out.read_text())["methods"]["fomaml"]["info"]["adaptation"]["valid_users"] == valid > 0
    assert main([*base, "--steps", "1"]) == 0  # fixed: no search, no validation users
    assert "valid_users" not in json.loads(out.read_text())["methods"]["fomaml"]["info"]["adaptation"]


def test_valid_users_is_eval_tune_users_when_fewer_are_asked(trained, tmp_path):
    out = tmp_path / "eval.json"
    run = trained("eval.tune_users=3").folder
    args = ["evaluate", "--checkpoint", str(run), "--shots", "1", "--n-boot", "5", "--json", str(out)]
    assert main(args) == 0
    assert json.loads(out.read_text())["methods"]["fomaml"]["info"]["adaptation"]["valid_users"] == 3


def test_shots_above_the_trained_support_say_that_recommend_reads_fewer(runs, capsys):
    """``--shots 8`` on a model trained with supports of at most 5 adapted on 8 items without a word, while
    recommend on the same model reads only the 5 most recent."""
    base = ["evaluate", "--checkpoint", str(runs["a"]), "--steps", "1", "--n-boot", "5", "--shots"]
    assert main([*base, "8"]) == 0
    assert "note: --shots 8 is above tasks.support_max=5" in capsys.readouterr().err
    assert main([*base, "5"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_recommend_names_a_fine_tuned_model_as_evaluate_does(runs, capsys):
    """``recommend --finetune`` on ``none`` printed "(none, 3 adaptation steps ...)": a model that does not
    adapt, adapting; evaluate calls it none+finetune."""
    args = ["recommend", "--checkpoint", str(runs["none"]), "--items", "1,2", "--k", "2"]
    assert main([*args, "--finetune"]) == 0
    assert "(none+finetune, 3 adaptation steps" in capsys.readouterr().out
    assert main(args) == 0
    assert "(none, 0 adaptation steps" in capsys.readouterr().out


def test_recommend_no_fuse_on_a_model_without_fusion_says_it_changes_nothing(runs, tmp_path, capsys):
    args = ["recommend", "--checkpoint", str(runs["a"]), "--items", "1,2", "--k", "2", "--no-fuse"]
    assert main(args) == 0
    assert "note: --no-fuse: this model carries no fusion" in capsys.readouterr().err
    fused = tmp_path / "fused"
    assert main(["export", "--checkpoint", str(runs["a"]), "--out", str(fused), "--fuse-weight", "1"]) == 0
    capsys.readouterr()
    assert main([*args[:2], str(fused), *args[3:]]) == 0  # a fused export: --no-fuse does change the ranking
    assert "note:" not in capsys.readouterr().err


def test_recommend_and_export_help_name_the_validated_steps(capsys):
    """Without a recorded adaptation, recommend and serve adapt with the run's train.eval_steps where it set
    them (``Recommender.unrecorded``); recommend's --steps and export's --choose-adaptation help said "the
    trained meta.adaptation_steps" only, so a run validated (and early-stopped) at 0 steps seemed to be
    served with 3."""
    import re

    for command in ("recommend", "export"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = re.sub(r"\s+", " ", capsys.readouterr().out)
        assert "train.eval_steps" in text, command
