"""Settings for a Ray cluster that `metarec` starts itself (no RAY_ADDRESS)."""

from __future__ import annotations

import os

from metarec_dist.runtime.ray_launcher import LOCAL_CLUSTER_ENV, local_cluster_defaults

KEY = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def test_local_cluster_turns_the_preemption_watcher_off(monkeypatch):
    monkeypatch.setenv(KEY, "unset-below")  # so that monkeypatch restores the original environment after
    monkeypatch.delenv(KEY)
    local_cluster_defaults()
    assert os.environ[KEY] == LOCAL_CLUSTER_ENV[KEY] == "0"


def test_a_users_setting_wins(monkeypatch):
    monkeypatch.setenv(KEY, "1")
    local_cluster_defaults()
    assert os.environ[KEY] == "1"
