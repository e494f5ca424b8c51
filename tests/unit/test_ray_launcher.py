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


def test_resource_shortfall_names_the_keys_and_what_the_cluster_has():
    from metarec_dist.config import load_config
    from metarec_dist.runtime.ray_launcher import resource_shortfall

    gpu = load_config(None, ["runtime.num_workers=4", "runtime.use_gpu=true", "runtime.cpus_per_worker=2"])
    assert resource_shortfall(gpu, {"CPU": 16.0}) == [
        "runtime.num_workers=4 x runtime.gpus_per_worker=1 needs 4 GPUs, the cluster has 0"
    ]
    assert resource_shortfall(gpu, {"CPU": 8.0, "GPU": 4.0}) == []
    cpu = load_config(None, ["runtime.num_workers=2", "runtime.cpus_per_worker=3"])
    assert resource_shortfall(cpu, {"CPU": 4.0, "GPU": 0.0}) == [
        "runtime.num_workers=2 x runtime.cpus_per_worker=3 needs 6 CPUs, the cluster has 4"
    ]
