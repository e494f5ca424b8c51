"""``metarec evaluate`` follow-ups (session 17): ``--tune-users`` sets how many validation users choose the
test-time adaptation (only the training config could); a mistake in the ``--baseline`` checkpoint names
``--baseline``, not the flag (``--shots``, ``--protocol``) that was fine for ``--checkpoint``; ``--fuse`` on a
fused export fuses at the export's stored weight, what recommend and serve apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metarec_dist import checkpoint as ckpt
from metarec_dist.cli import main


@pytest.fixture(scope="module")
def runs(trained):
    return {
        "a": trained().folder,
        "short": trained("model.max_seq_len=8", "tasks.support_max=3").folder,
        "other": trained("data.synthetic_items=40").folder,
    }


def _adaptations(path: Path) -> dict[str, dict]:
    methods = json.loads(path.read_text())["methods"]
    return {name: m["info"]["adaptation"] for name, m in methods.items() if "adaptation" in m["info"]}


def test_tune_users_chooses_the_adaptation_on_that_many_validation_users(runs, tmp_path):
    out = tmp_path / "r.json"
    base = ["evaluate", "--checkpoint", str(runs["a"]), "--n-boot", "5", "--json", str(out)]
    assert main([*base, "--tune-users", "all"]) == 0
    every = _adaptations(out)["fomaml"]["valid_users"]
    assert every > 3
    assert main([*base, "--tune-users", "3", "--baseline", str(runs["a"])]) == 0
    chosen = _adaptations(out)
    assert chosen["fomaml"]["valid_users"] == chosen["baseline:fomaml"]["valid_users"] == 3
    assert main([*base, "--tune-users", "0"]) == 0  # eval.tune_users' spelling of all
    assert _adaptations(out)["fomaml"]["valid_users"] == every


@pytest.mark.parametrize("value", ["-2", "x", "1.5"])
def test_a_bad_tune_users_is_refused_by_the_parser(runs, capsys, value):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--checkpoint", str(runs["a"]), "--tune-users", value])
    assert exc.value.code == 2
    assert "argument --tune-users: expected a number of validation users >= 1 or 'all'" in (
        capsys.readouterr().err
    )


def test_tune_users_with_nothing_searched_is_refused_not_ignored(runs, capsys):
    args = ["evaluate", "--checkpoint", str(runs["a"]), "--steps", "1", "--tune-users", "3"]
    assert main(args) == 2
    assert capsys.readouterr().err.startswith("error: --tune-users: --steps fixes the adaptation")


def _baseline_error(runs, capsys, baseline: Path | str, *extra: str) -> str:
    args = ["evaluate", "--checkpoint", str(runs["a"]), "--baseline", str(baseline), "--n-boot", "5"]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: --baseline {baseline}: ") and "Traceback" not in err
    return err


def test_shots_that_do_not_fit_the_baselines_window_name_the_baseline(runs, capsys):
    """``--shots 1,8`` fits the evaluated model (max_seq_len 16) but not the baseline's (8): the error began
    with ``--shots``, which the user would go and change for the model that was fine."""
    err = _baseline_error(runs, capsys, runs["short"], "--shots", "1,8")
    assert "model.max_seq_len=8" in err and f"--checkpoint {runs['a']} is fine" in err


def test_a_baseline_of_another_protocol_names_no_flag_the_user_did_not_give(runs, trained, capsys):
    """The message said "--protocol cold_start: ..." when the user gave no --protocol."""
    loo = ["data.synthetic_users=60", "tasks.support_max=10", "tasks.query_size=5", "data.protocol=loo"]
    baseline = trained(*loo, "meta.algorithm=sasrec", "train.eval_every=1").folder  # test_ev17's run
    err = _baseline_error(runs, capsys, baseline)
    assert "not comparable under cold_start: " in err and "was trained with data.protocol=loo" in err
    assert "--protocol" not in err and "is fine" in err


def test_a_baseline_on_other_data_says_what_differs(runs, capsys):
    err = _baseline_error(runs, capsys, runs["other"])
    assert "trained on different data (40 items" in err and "--checkpoint: 30 items" in err


@pytest.mark.parametrize("damaged", [ckpt.EXPORT_CONFIG, "model.safetensors"])
def test_a_damaged_baseline_export_names_the_baseline(runs, capsys, tmp_path, damaged):
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(runs["a"]), "--out", str(out), "--no-fuse"]) == 0
    (out / damaged).write_text('{"x": 1}')
    err = _baseline_error(runs, capsys, out)
    assert "damaged" in err and "is fine" in err


def test_an_error_while_scoring_the_baseline_names_it(runs, capsys, monkeypatch):
    from metarec_dist.eval.protocol import ColdStartProtocol

    real = ColdStartProtocol.evaluate

    def evaluate(self, loaded, *args, **kwargs):
        if Path(loaded.source).is_relative_to(runs["short"]):
            raise ValueError("no validation users to choose the adaptation steps/lr on")
        return real(self, loaded, *args, **kwargs)

    monkeypatch.setattr(ColdStartProtocol, "evaluate", evaluate)
    err = _baseline_error(runs, capsys, runs["short"])
    assert "no validation users" in err and "is fine" in err


@pytest.fixture(scope="module")
def fixed_export(runs, tmp_path_factory):
    """Run "a" exported fused at 0.3, a weight the validation search never proposes."""
    out = tmp_path_factory.mktemp("fixed") / "export"
    assert main(["export", "--checkpoint", str(runs["a"]), "--out", str(out), "--fuse-weight", "0.3"]) == 0
    return out


def test_fuse_on_a_fused_export_uses_its_stored_weight(fixed_export, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["evaluate", "--checkpoint", str(fixed_export), "--fuse", "--n-boot", "5", "--json", str(out)]
    assert main(args) == 0
    fusion = _adaptations(out)["fomaml+cooc"]["fusion"]
    assert fusion["weight"] == 0.3 and fusion["selected_on"] == "export"
    scores = {float(w): v for w, v in fusion["val_ndcg@10"].items()}
    assert 0.3 in scores and fusion["valid_best"] == max(scores, key=lambda w: (scores[w], -w))
    assert (
        "fused at the export's stored weight 0.3, which recommend and serve apply" in capsys.readouterr().err
    )


def test_a_fused_export_at_the_configs_shots_reports_as_its_run_folder(runs, tmp_path, capsys):
    """``export --fuse`` chose the weight as ``evaluate --fuse`` does: at the config's shots the export's
    table is the run folder's; its JSON adds only where the weight came from."""
    export, a, b = tmp_path / "export", tmp_path / "run.json", tmp_path / "export.json"
    assert main(["export", "--checkpoint", str(runs["a"]), "--out", str(export), "--fuse"]) == 0
    for source, out in ((runs["a"], a), (export, b)):
        assert (
            main(["evaluate", "--checkpoint", str(source), "--fuse", "--n-boot", "5", "--json", str(out)])
            == 0
        )
    run, exp = _adaptations(a)["fomaml+cooc"], _adaptations(b)["fomaml+cooc"]
    assert "selected_on" not in run["fusion"] and exp["fusion"].pop("selected_on") == "export"
    assert exp["fusion"].pop("valid_best") == run["fusion"]["weight"]
    # The export's recorded adaptation, not a search: the same setting as the run folder's choice.
    assert (exp.pop("selected_on"), exp.pop("grid_size"), run.pop("selected_on")) == ("export", 1, "valid")
    run.pop("grid_size")
    assert exp == run
    metrics = [json.loads(p.read_text())["methods"]["fomaml+cooc"]["metrics"] for p in (a, b)]
    assert metrics[0] == metrics[1]  # the same process, the same computation
    assert "would choose" not in capsys.readouterr().err
