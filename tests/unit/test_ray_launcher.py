"""Settings for a Ray cluster that `metarec` starts itself (no RAY_ADDRESS)."""

from __future__ import annotations

import os

import pytest

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


def test_a_rerun_that_trained_nothing_says_so(tmp_path):
    """Ray's result of a re-run of a finished run carries the first run's metrics (no checkpoint was
    reported this time): the driver's resume point tells the summary that nothing was trained."""
    import json

    from metarec_dist.checkpoint import CLIENT_STATE
    from metarec_dist.config import load_config
    from metarec_dist.runtime.ray_launcher import with_resume_point
    from metarec_dist.train.summary import next_step_line

    point = tmp_path / "checkpoint_step_000005"
    point.mkdir()
    (point / CLIENT_STATE).write_text(json.dumps({"step": 5}))
    cfg = load_config("configs/tiny.yaml", ["train.meta_steps=5"])
    # Ray hands the step back as a float; the first run had itself resumed at step 3.
    first_runs_metrics = {"step": 5.0, "resumed_from": 3}
    out = with_resume_point(dict(first_runs_metrics), point)
    assert out["resumed_from"] == 5
    assert next_step_line(out, cfg).startswith("finished:   already, at meta-step 5;")
    # A run that trained on from its resume point keeps what the workers reported.
    assert with_resume_point({"step": 9, "resumed_from": 5}, point)["resumed_from"] == 5
    assert "resumed_from" not in with_resume_point({"step": 9}, None)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:6390", True),
        ("localhost:6379", True),
        ("ray://127.0.0.1:10001", True),
        ("10.0.0.5:6379", False),
    ],
)
def test_joining_a_loopback_address_keeps_it(monkeypatch, address, loopback):
    """A head on 127.0.0.1 only: Ray would swap the address for the machine's and retry for ever."""
    import ray
    from ray._private import ray_constants, services

    from metarec_dist.runtime.ray_launcher import init_ray

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setenv("RAY_ADDRESS", address)
    joined = []
    monkeypatch.setattr(
        ray, "init", lambda address, **kw: joined.append(services.resolve_ip_for_localhost("127.0.0.1"))
    )
    monkeypatch.setattr(services, "node_ip_address_from_perspective", lambda address=None: "192.0.2.2")
    init_ray()
    assert joined == ["127.0.0.1" if loopback else "192.0.2.2"]


@pytest.mark.parametrize(("workers", "warned"), [(2, False), (8, True)])
def test_more_workers_than_cpus_on_a_local_cluster_is_said(monkeypatch, caplog, workers, warned):
    from metarec_dist.config import load_config
    from metarec_dist.runtime.ray_launcher import warn_if_oversubscribed

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = load_config("configs/tiny.yaml", ["runtime.backend=ray", f"runtime.num_workers={workers}"])
    with caplog.at_level("WARNING", logger="metarec"):
        warn_if_oversubscribed(cfg)
    said = "runtime.num_workers=8 x runtime.cpus_per_worker=1 on a machine with 2 CPUs"
    assert (said in caplog.text) == warned, caplog.text
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")  # a joined cluster: its own CPUs count
    caplog.clear()
    warn_if_oversubscribed(cfg)
    assert caplog.text == ""


def test_the_python_sigterm_handler_survives_ray_init(monkeypatch):
    """ray.init puts Ray's own SIGTERM handler (stack dump, exit) over `metarec train`'s, which says where
    a re-run starts; here a stand-in ray.init resets it as Ray does."""
    import signal

    import ray

    from metarec_dist.runtime.ray_launcher import init_ray

    def ours(signum, frame):
        raise KeyboardInterrupt

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    previous = signal.signal(signal.SIGTERM, ours)
    try:
        init_ray()
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)
