"""Session 19: a checkpoint saved before a setting existed (data.item_features_columns, added with a default
of []) is resumed without "changed settings: data.item_features_columns: None -> []": a setting the saved
config lacks counts at its default."""

from __future__ import annotations

from metarec_dist.checkpoint import config_changes
from metarec_dist.config import Config


def test_a_setting_added_since_the_checkpoint_is_no_change():
    new = Config().to_dict()
    old = Config().to_dict()
    for key in ("user_features_columns", "item_features_columns", "user_features_sep", "item_features_sep"):
        del old["data"][key]  # what a checkpoint from before these keys holds
    assert config_changes(old, new) == {}
    new["data"]["item_features_sep"] = "|"  # set: a change, old at its default
    new["optim"]["lr"] = old["optim"]["lr"] * 2
    changes = config_changes(old, new)
    assert changes == {
        "data.item_features_sep": (None, "|"),
        "optim.lr": (old["optim"]["lr"], new["optim"]["lr"]),
    }
