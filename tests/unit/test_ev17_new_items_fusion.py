"""Fusion with the co-occurrence counts for a model trained with ``data.protocol: new_items``: under the
``new_items`` protocol every candidate is a held-out item that no training user had, so every count is zero
and fusion changes nothing (session 17's new-user pass)."""

from __future__ import annotations

import json

import pytest
from test_new_items import new_items_run, write_movies

from metarec_dist.cli import main


@pytest.fixture(scope="module")
def run(trained, tmp_path_factory):
    movies = write_movies(tmp_path_factory.mktemp("data") / "movies")
    return trained(*new_items_run(movies)).folder


def test_fuse_under_new_items_is_refused_not_a_renamed_model_row(run, capsys):
    """It reported the model's own numbers as ``fomaml+cooc`` after a weight search where all 5 weights
    tied (measured on MovieLens 100K: identical NDCG@10 at every weight)."""
    assert main(["evaluate", "--checkpoint", str(run), "--fuse", "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --fuse: under --protocol new_items every candidate is a held-out item")
    assert "--protocol mixed" in err and "Traceback" not in err


def test_fuse_from_the_config_under_new_items_is_dropped_with_a_note(capsys):
    from metarec_dist.eval.cli import fuse_for

    assert fuse_for("new-items", None, configured=True) is False
    assert "eval.fuse is on, but under --protocol new_items" in capsys.readouterr().err
    assert fuse_for("mixed", True, configured=False) is True
    assert fuse_for("cold_start", None, configured=True) is True
    assert fuse_for("new-items", False, configured=True) is False


def test_a_fused_export_of_a_new_items_model_chooses_its_weight_over_every_item(run, tmp_path, monkeypatch):
    """``metarec export --fuse`` chose the weight under the new_items protocol, where every weight ties and
    0 always won; recommend ranks every item (the mixed protocol), so the choice is made there."""
    from metarec_dist.eval import cli

    asked = []
    real = cli.model_protocol

    def spy(loaded, shots, name="cold_start", *args, **kwargs):
        asked.append(name)
        return real(loaded, shots, name, *args, **kwargs)

    monkeypatch.setattr(cli, "model_protocol", spy)
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(run), "--out", str(out), "--fuse"]) == 0
    assert asked == ["mixed"]
    scores = json.loads((out / "metarec_config.json").read_text())["fusion"]["val_ndcg@10"]
    assert len(set(scores.values())) > 1  # the weights are told apart: the counts are not all zero
