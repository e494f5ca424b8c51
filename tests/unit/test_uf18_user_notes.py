"""A stated user feature value outside the training vocabulary: read as unknown (a genuinely new value is
one), but said: `metarec recommend` prints a note on stderr naming the feature, the value and known values;
a `metarec serve` replica answers the note in the JSON (``notes``) and prints nothing of the client's text.
An unknown feature name is an error naming the declared ones, the client's name cut when long."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from feature_data import feature_config  # noqa: E402
from trained import SMALL  # noqa: E402

from metarec_dist import checkpoint as ckpt  # noqa: E402
from metarec_dist.cli import main  # noqa: E402
from metarec_dist.data import prepare_data  # noqa: E402
from metarec_dist.runtime.context import LocalContext  # noqa: E402
from metarec_dist.runtime.serving import RecommenderReplica, load_served  # noqa: E402
from metarec_dist.train.trainer import MetaTrainer  # noqa: E402


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("uf18")
    cfg = feature_config(root, [*SMALL])
    data = prepare_data(cfg.data).user_splits()
    out = MetaTrainer(cfg, LocalContext(root / "run"), data).fit()
    return ckpt.export(Path(out["checkpoint"]), root / "export")


@pytest.fixture(scope="module")
def replica(export) -> RecommenderReplica:
    return RecommenderReplica(load_served(str(export), fuse=True), threads=1)


def test_recommend_notes_an_unknown_value_with_known_ones_and_still_answers(export, capsys):
    args = ["recommend", "--checkpoint", str(export), "--k", "3"]
    assert main([*args, "--user", "age=24,occupation=astronaut"]) == 0
    captured = capsys.readouterr()
    notes = [ln for ln in captured.err.splitlines() if ln.startswith("note:")]
    assert notes == [
        "note: --user occupation='astronaut': not in the training vocabulary, read as unknown "
        "(known values: job0, job1, job2, job3)"
    ]
    assert "top 3" in captured.out
    assert main([*args, "--user", "age=24,occupation=job1"]) == 0  # a known value: no note
    assert "note:" not in capsys.readouterr().err


def test_recommend_refuses_an_unknown_feature_name_naming_the_declared_ones_cut_when_long(export, capsys):
    name = "x" * 500
    assert main(["recommend", "--checkpoint", str(export), "--user", f"age=24,{name}=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --user: unknown user feature 'xxxx") and err.count("\n") == 1
    assert name not in err and "(500 characters)" in err
    assert err.rstrip().endswith("the declared ones are: age, gender, occupation")


def test_a_replica_answers_the_note_and_prints_no_client_text(replica, capsys):
    status, answer = replica.answer({"user": {"occupation": "astronaut\nnote: forged"}, "k": 3})
    assert status == 200 and len(answer["items"]) == 3
    assert answer["notes"] == [
        "\"user\" occupation='astronaut\\nnote: forged': not in the training vocabulary, read as unknown "
        "(known values: job0, job1, job2, job3)"
    ]
    assert capsys.readouterr().err == ""  # nothing in the replica's log
    status, answer = replica.answer({"user": {"occupation": "job2"}, "k": 3})
    assert status == 200 and "notes" not in answer


def test_a_replica_cuts_an_unknown_feature_name_in_its_400(replica):
    status, answer = replica.answer({"user": {"y" * 100_000: "1"}})
    assert status == 400 and len(answer["error"]) < 200
    assert (
        answer["error"].startswith('"user": unknown user feature \'yyyy')
        and "(100000 characters)" in answer["error"]
    )
