"""``metarec recommend`` for a brand-new user known by its features alone (no ``--items``): the user token
and BOS are the whole input, and a model that reads no user features, or a call that names neither a
history nor features, is one clear error."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from feature_data import feature_config  # noqa: E402
from trained import SMALL  # noqa: E402

from metarec_dist import checkpoint as ckpt  # noqa: E402
from metarec_dist.cli import main  # noqa: E402
from metarec_dist.data import prepare_data  # noqa: E402
from metarec_dist.eval.loading import load_model  # noqa: E402
from metarec_dist.eval.recommend import encode_user_features, load_catalogue, recommend  # noqa: E402
from metarec_dist.runtime.context import LocalContext  # noqa: E402
from metarec_dist.tasks.sampler import prefix_batch  # noqa: E402
from metarec_dist.train.trainer import MetaTrainer  # noqa: E402


def _export(tmp_path: Path, *extra: str) -> Path:
    cfg = feature_config(tmp_path, [*SMALL, *extra])
    data = prepare_data(cfg.data).user_splits()
    out = MetaTrainer(cfg, LocalContext(tmp_path / "run"), data).fit()
    return ckpt.export(Path(out["checkpoint"]), tmp_path / "export")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("new_user"))


def _ranked(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.strip()[:2].rstrip(".").isdigit()]


def test_recommend_from_user_features_alone(export, capsys):
    assert main(["recommend", "--checkpoint", str(export), "--user", "age=24,gender=M", "--k", "4"]) == 0
    out = capsys.readouterr().out
    assert "for a new user from its features alone" in out and "history:" not in out
    ranked = _ranked(out)
    assert len(ranked) == 4 and all("Movie" in ln for ln in ranked)


def test_the_user_token_decides_a_new_users_scores(export):
    """Two brand-new users differing only in their features get different scores, and the batch holds
    nothing but BOS: the features are what the model read."""
    loaded = load_model(export)
    catalogue = load_catalogue(loaded)
    a = encode_user_features(loaded, {"age": "24", "gender": "M", "occupation": "job0"})
    b = encode_user_features(loaded, {"age": "60", "gender": "F", "occupation": "job3"})
    batch = prefix_batch([np.zeros(0, np.int64)], 0, loaded.cfg.tasks.support_max, loaded.model.bos_id, a)
    assert int(batch.attention_mask.sum()) == 1 and int(batch.item_ids[0, -1]) == loaded.model.bos_id
    num_items = int(loaded.meta["num_items"])
    rec_a = recommend(loaded, catalogue, [], num_items, 3, 0.5, user_features=a)
    rec_b = recommend(loaded, catalogue, [], num_items, 3, 0.5, user_features=b)
    score_a = {r.item: r.score for r in rec_a}
    score_b = {r.item: r.score for r in rec_b}
    assert set(score_a) == set(range(1, num_items + 1))  # nothing masked: there is no history
    assert not np.allclose([score_a[i] for i in score_a], [score_b[i] for i in score_a])
    # No support to adapt on: the adaptation steps change nothing.
    rec_a0 = recommend(loaded, catalogue, [], num_items, 0, 0.5, user_features=a)
    assert [(r.item, r.score) for r in rec_a0] == [(r.item, r.score) for r in rec_a]


def test_recommend_needs_a_history_or_user_features(export, capsys):
    assert main(["recommend", "--checkpoint", str(export)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: give the user's history (--items") and "Traceback" not in err
    with pytest.raises(ValueError, match="nothing to recommend from"):
        loaded = load_model(export)
        recommend(loaded, load_catalogue(loaded), [], 3, 0, 0.5, user_features=None)


def test_a_number_feature_stated_as_text_names_the_feature(export, capsys):
    assert main(["recommend", "--checkpoint", str(export), "--user", "age=old,gender=M"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --user age=old: expected a number"), err


def test_new_user_on_a_model_without_user_features_is_one_clear_error(tmp_path, capsys):
    export = _export(tmp_path, "model.user_prefix=false")
    assert main(["recommend", "--checkpoint", str(export), "--user", "gender=F"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --user: this model reads no user features") and "Traceback" not in err
