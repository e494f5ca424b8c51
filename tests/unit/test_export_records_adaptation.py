"""``metarec export --choose-adaptation`` / ``--steps N``: a plain export records the test-time adaptation
that ``metarec recommend``, ``metarec serve`` and ``metarec evaluate`` then apply. Without it they adapt with
the trained ``meta.adaptation_steps`` / ``meta.inner_lr``, which on MovieLens 100K scored well below the
adaptation the evaluation chooses (docs/results/amazon-sports.md, "GPU, second look")."""

from __future__ import annotations

import json

import pytest

from metarec_dist import checkpoint as ckpt
from metarec_dist.cli import main


def export(run, out, *extra: str) -> dict:
    assert main(["export", "--checkpoint", str(run.folder), "--out", str(out), "--no-fuse", *extra]) == 0
    return json.loads((out / ckpt.EXPORT_CONFIG).read_text())


def recommended(capsys, checkpoint, *extra: str) -> str:
    capsys.readouterr()
    assert main(["recommend", "--checkpoint", str(checkpoint), "--items", "1,2,3", "--k", "5", *extra]) == 0
    return capsys.readouterr().out


def test_export_steps_0_serves_the_initialisation_as_recommend_steps_0_does(trained, tmp_path, capsys):
    from metarec_dist.eval.recommend import Recommender

    run = trained()
    assert run.cfg.meta.adaptation_steps > 0  # the trained adaptation differs from the recorded one
    meta = export(run, tmp_path / "init", "--steps", "0")
    assert "test-time adaptation 0 steps" in capsys.readouterr().out  # the summary says so
    assert meta["adaptation"] == {
        "steps": 0,
        "inner_lr": run.cfg.meta.inner_lr,
        "adaptation_selected_on": "fixed",
    }
    assert Recommender.load(str(tmp_path / "init")).setting(3) == (0, run.cfg.meta.inner_lr)
    served = recommended(capsys, tmp_path / "init")
    assert "0 adaptation steps" in served
    # The same ranking as asking the run for no adaptation by hand, and not the trained adaptation's header.
    by_hand = recommended(capsys, run.folder, "--steps", "0")
    assert served.splitlines()[1:] == by_hand.splitlines()[1:]
    trained_steps = recommended(capsys, run.folder)
    assert f"{run.cfg.meta.adaptation_steps} adaptation steps" in trained_steps
    # An explicit --steps on recommend still wins over the record.
    assert "2 adaptation steps" in recommended(capsys, tmp_path / "init", "--steps", "2")


def test_export_choose_adaptation_records_what_evaluate_chooses(trained, tmp_path, capsys):
    run = trained()
    meta = export(run, tmp_path / "chosen", "--choose-adaptation")
    recorded = meta["adaptation"]
    assert recorded["adaptation_selected_on"] == "valid" and "val_ndcg@10" in recorded
    report = tmp_path / "run.json"
    assert main(["evaluate", "--checkpoint", str(run.folder), "--no-fuse", "--json", str(report)]) == 0
    chosen = json.loads(report.read_text())["methods"]["fomaml"]["info"]["adaptation"]
    assert (recorded["steps"], recorded["inner_lr"]) == (chosen["steps"], chosen["inner_lr"])
    # evaluate on the export scores the recorded adaptation (what recommend and serve apply) and says so ...
    capsys.readouterr()
    on_export = tmp_path / "export.json"
    argv = ["evaluate", "--checkpoint", str(tmp_path / "chosen"), "--no-fuse", "--json", str(on_export)]
    assert main(argv) == 0
    assert "note: adapted as" in capsys.readouterr().err
    used = json.loads(on_export.read_text())["methods"]["fomaml"]["info"]["adaptation"]
    assert (used["steps"], used["inner_lr"], used["selected_on"]) == (
        chosen["steps"],
        chosen["inner_lr"],
        "export",
    )
    # The validation score it was chosen with, as the export records it (was null; the report rounds).
    assert used["val_ndcg@10"] == pytest.approx(recorded["val_ndcg@10"], abs=1e-6)
    assert used["val_ndcg@10"] == chosen["val_ndcg@10"]
    # ... unless asked for another.
    again = tmp_path / "again.json"
    assert main([*argv[:-1], str(again), "--tune-users", "all"]) == 0
    assert json.loads(again.read_text())["methods"]["fomaml"]["info"]["adaptation"]["selected_on"] == "valid"


def test_a_fused_export_takes_steps_as_its_fixed_adaptation(trained, tmp_path, capsys):
    run = trained()
    out = tmp_path / "fused"
    argv = [
        "export",
        "--checkpoint",
        str(run.folder),
        "--out",
        str(out),
        "--fuse-weight",
        "1",
        "--steps",
        "1",
    ]
    assert main([*argv, "--inner-lr", "0.07"]) == 0
    # The summary said the weight but not the adaptation the fused export records and applies.
    assert "test-time adaptation 1 step at lr 0.07 (fixed by --steps)" in capsys.readouterr().out
    meta = json.loads((out / ckpt.EXPORT_CONFIG).read_text())
    assert (meta["fusion"]["steps"], meta["fusion"]["inner_lr"]) == (1, 0.07)
    # --steps holds for the model alone too: recommend / serve --no-fuse on the export apply it (a chosen
    # adaptation is the fusion's own choice, made with its weight, and is recorded in the fusion only).
    assert (meta["adaptation"]["steps"], meta["adaptation"]["inner_lr"]) == (1, 0.07)
    assert "1 adaptation step, lr 0.07" in recommended(capsys, out, "--no-fuse")


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--inner-lr", "0.1"], "give --steps N"),
        (["--steps", "-1"], "--steps must be in [0, 1000] (got -1)"),
        (["--steps", "100000000000"], "--steps must be in [0, 1000] (got 100000000000)"),
    ],
)
def test_bad_adaptation_options_fail_before_the_export(trained, tmp_path, capsys, extra, said):
    from test_safety import assert_fails

    out = tmp_path / "bad"
    assert_fails(capsys, ["export", "--checkpoint", str(trained().folder), "--out", str(out), *extra], said)
    assert not out.exists()


def test_choose_and_steps_together_are_refused(trained, tmp_path, capsys):
    argv = ["export", "--checkpoint", str(trained().folder), "--out", str(tmp_path / "x")]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--choose-adaptation", "--steps", "1"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_a_model_that_does_not_adapt_has_nothing_to_record(trained, tmp_path, capsys):
    from test_safety import assert_fails

    run = trained("meta.algorithm=sasrec")
    argv = ["export", "--checkpoint", str(run.folder), "--no-fuse", "--out", str(tmp_path / "s")]
    assert_fails(capsys, [*argv, "--steps", "2"], "does not adapt at test time")
    assert_fails(capsys, [*argv, "--choose-adaptation"], "does not adapt at test time")
    assert not (tmp_path / "s").exists()


def test_a_run_without_validation_users_cannot_choose(trained, tmp_path, capsys):
    from test_safety import assert_fails

    run = trained("data.valid_frac=0")
    argv = ["export", "--checkpoint", str(run.folder), "--no-fuse", "--out", str(tmp_path / "v")]
    assert_fails(capsys, [*argv, "--choose-adaptation"], "no validation users", "--steps N")
    assert main([*argv, "--steps", "1"]) == 0


@pytest.mark.parametrize(
    ("record", "said"),
    [
        ([1, 0.1], "'adaptation' is a list"),
        ({"steps": -1, "inner_lr": 0.1}, "must be >= 0"),
        ({"steps": 1}, "'inner_lr'"),
        ({"steps": 1, "inner_lr": 0.1, "per_shot": {"1": [2, float("inf")]}}, "finite"),
    ],
)
def test_a_damaged_record_is_a_user_error(trained, tmp_path, record, said):
    from metarec_dist.errors import UserError
    from metarec_dist.eval.loading import load_model

    out = tmp_path / "damaged"
    meta = export(trained(), out, "--steps", "1")
    meta["adaptation"] = record
    (out / ckpt.EXPORT_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(UserError, match=ckpt.EXPORT_CONFIG) as err:
        load_model(str(out))
    assert said in str(err.value) and "export the checkpoint again" in str(err.value)


def test_per_shot_records_follow_the_history_length():
    from metarec_dist.eval.stored_adaptation import StoredAdaptation

    stored = StoredAdaptation(steps=3, inner_lr=0.5, per_shot={1: (0, 0.5), 5: (2, 0.1)})
    assert [stored.setting(n) for n in (1, 3, 5, 9)] == [(0, 0.5), (0, 0.5), (2, 0.1), (2, 0.1)]
    adaptation = stored.adaptation([1, 5])
    assert adaptation.selected_on == "export" and adaptation.setting(5) == (2, 0.1)


def test_the_summary_names_each_per_shot_choice(tmp_path):
    """With ``eval.adaptation: per_shot`` the summary said "(per support size: see its per_shot)": the
    choices, which recommend applies by the history's length, are now named as evaluate names them."""
    from metarec_dist.cli import _export_summary

    record = {"steps": 10, "inner_lr": 0.5, "adaptation_selected_on": "valid", "per_shot": {"1": [10, 1.0]}}
    record["per_shot"]["3"] = [1, 0.5]
    meta = {"step": 2, "num_items": 30, "adaptation": record}
    (tmp_path / ckpt.EXPORT_CONFIG).write_text(json.dumps(meta))
    assert _export_summary(tmp_path).splitlines()[1] == (
        "test-time adaptation per support size K=1: 10 steps at lr 1; K=3: 1 step at lr 0.5 "
        "(chosen on validation users), which recommend and serve apply"
    )
