"""train.init_from from a run that read other features: named before any data is read or Ray started (on
Ray it took the workers 40 s to say it)."""

from __future__ import annotations

import json

import pytest

from metarec_dist import checkpoint as ckpt
from metarec_dist.config import with_overrides
from metarec_dist.errors import UserError

GENRES = {"name": "genres", "kind": "token_seq"}
AGE = {"name": "age", "kind": "float"}


def fake_export(tmp_path, cfg, item=(), user=(), **model):
    """An export folder whose recorded config is ``cfg`` with these features and model settings (its
    weights file is only there: nothing reads it before the check)."""
    config = cfg.to_dict()
    config["data"].update(item_features=list(item), user_features=list(user))
    config["model"].update(model)
    folder = tmp_path / "export"
    folder.mkdir(exist_ok=True)
    (folder / ckpt.EXPORT_CONFIG).write_text(json.dumps({"config": config}))
    (folder / ckpt.EXPORT_WEIGHTS).write_bytes(b"")
    return folder


@pytest.fixture
def no_training(monkeypatch):
    from metarec_dist.train import launch

    def trained(cfg, verbose=False):
        raise AssertionError("trained before train.init_from's features were checked")

    monkeypatch.setattr(launch, "train_one", trained)
    return launch.train


def test_features_on_one_side_only_are_named_before_any_work(tiny_cfg, tmp_path, no_training):
    source = fake_export(tmp_path, tiny_cfg, item=[GENRES])
    with pytest.raises(
        UserError,
        match=r"that run's item features are \[\('genres', 'token_seq'\)\], this run's \[\]; declare the "
        r"same data.item_features as that run$",
    ):
        no_training(with_overrides(tiny_cfg, [f"train.init_from={source}"]))
    source = fake_export(tmp_path, tiny_cfg, user=[AGE])
    with pytest.raises(
        UserError, match=r"that run's user features are \[\('age', 'float'\)\], this run's \[\]"
    ):
        no_training(with_overrides(tiny_cfg, [f"train.init_from={source}"]))


def test_features_the_model_did_not_read_count_as_none(tiny_cfg, tmp_path, no_training):
    """model.item_content: off (user_prefix: false) builds no item (user) feature parts: such a source is
    one without them, and the refusal names the switch."""
    source = fake_export(tmp_path, tiny_cfg, item=[GENRES], user=[AGE], item_content="off", user_prefix=False)
    with pytest.raises(AssertionError, match="trained before"):
        no_training(with_overrides(tiny_cfg, [f"train.init_from={source}"]))
    source = fake_export(tmp_path, tiny_cfg, item=[GENRES])
    with pytest.raises(UserError, match=r"and the same model.item_content \('sum' there, 'off' here\)$"):
        no_training(with_overrides(tiny_cfg, [f"train.init_from={source}", "model.item_content=off"]))
