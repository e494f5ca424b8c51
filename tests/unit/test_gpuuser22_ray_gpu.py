"""Session 22 (gpuuser22): ``runtime.backend=ray`` with ``runtime.use_gpu=true``, as a user with GPUs runs it.

- On a cluster started here, a machine whose torch sees no GPU started Ray first (10 s) and then either
  refused (Ray saw no GPU) or, where Ray saw one that torch cannot use (a CPU-only torch), failed in the
  workers' NCCL process group as nested tracebacks: now refused in one line before Ray starts.
- A joined cluster (``RAY_ADDRESS``) without the GPUs was only warned about, and the workers waited for
  ever, also where the autoscaler's reported config caps the cluster below them: now refused there, and the
  warning that stays names what to do.
- Workers whose torch cannot use the GPU Ray gave them (a CPU-only torch on the nodes) failed with Ray
  Train's nested tracebacks: now one line.
"""

from __future__ import annotations

import logging

import pytest
import torch

from metarec_dist.config import load_config
from metarec_dist.errors import UserError
from metarec_dist.runtime import ray_launcher


def gpu_config(**extra: str):
    sets = [
        "runtime.backend=ray",
        "runtime.use_gpu=true",
        "runtime.num_workers=2",
        "runtime.cpus_per_worker=1",
    ]
    return load_config("configs/tiny.yaml", sets + [f"{k}={v}" for k, v in extra.items()])


def test_a_cluster_started_here_without_a_gpu_torch_sees_is_refused_before_ray_starts(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ray_launcher, "init_ray", lambda *a, **k: pytest.fail("Ray was started"))
    cfg = gpu_config(**{"runtime.storage_path": str(tmp_path), "runtime.run_name": "r"})
    with pytest.raises(UserError) as said:
        ray_launcher._fit_on_ray(cfg, False, tmp_path)
    text = str(said.value)
    assert text.startswith("runtime.use_gpu=true: torch ") and "\n" not in text
    assert text.endswith("or join a Ray cluster with GPUs (RAY_ADDRESS)")


def test_the_local_backend_is_not_told_to_join_a_cluster(monkeypatch):
    from metarec_dist.train.launch import check_gpu_visible

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as said:
        check_gpu_visible(load_config("configs/tiny.yaml", ["runtime.use_gpu=true"]))
    assert "RAY_ADDRESS" not in str(said.value)


@pytest.fixture
def joined(monkeypatch):
    """A joined cluster with 4 CPUs and no GPU; ``joined(config)``: what its autoscaler reports (None: no
    autoscaler config in the GCS)."""
    import ray
    from ray._private.state import state

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})

    def report(most):
        answer = most if callable(most) else lambda: most
        monkeypatch.setattr(state, "get_max_resources_from_cluster_config", answer)

    report(None)
    return report


def test_a_joined_cluster_its_autoscaler_cannot_grow_to_the_gpus_is_refused(joined):
    joined({"CPU": 64, "GPU": 1})  # GPU nodes, but at most one GPU: two workers never fit
    with pytest.raises(UserError) as said:
        ray_launcher.check_cluster_resources(gpu_config())
    text = str(said.value)
    assert text.startswith(
        "runtime.num_workers=2 x runtime.gpus_per_worker=1 needs 2 GPUs, the cluster has 0"
    )
    assert "its autoscaler grows it to at most 1 GPUs: the run could never start" in text
    assert "runtime.use_gpu=false" in text and "\n" not in text
    joined({"CPU": 64})  # a cluster config whose node groups have no GPU at all
    with pytest.raises(UserError, match="grows it to at most 0 GPUs"):
        ray_launcher.check_cluster_resources(gpu_config())


def test_a_joined_cluster_that_may_get_the_gpus_is_one_warning_naming_what_to_do(joined, caplog):
    for most in (None, {"CPU": 64, "GPU": 8}):  # no autoscaler config; one that grows to 8 GPUs
        caplog.clear()
        joined(most)
        with caplog.at_level(logging.WARNING, logger="metarec"):
            ray_launcher.check_cluster_resources(gpu_config())
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and "\n" not in said[0]
        assert "Ctrl-C if none will" in said[0] and "runtime.use_gpu=false" in said[0]


def test_a_cluster_started_here_without_gpus_names_the_gpu_keys(monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    with pytest.raises(UserError, match=r"runtime.gpus_per_worker, or set runtime.use_gpu=false"):
        ray_launcher.check_cluster_resources(gpu_config())


def test_workers_whose_torch_cannot_use_the_gpu_are_one_line():
    from ray.train import ControllerError

    nccl = RuntimeError("Distributed package doesn't have NCCL built in")
    failure = ControllerError(RuntimeError(f"ray::execute._setup_torch_process_group() ...\n{nccl}"))
    said = ray_launcher.gpu_failure_in(failure, gpu_config())
    assert isinstance(said, UserError) and "\n" not in str(said)
    assert "(Distributed package doesn't have NCCL built in)" in str(said)
    assert "install a CUDA build of torch on the cluster's GPU nodes" in str(said)
    assert ray_launcher.gpu_failure_in(failure, load_config("configs/tiny.yaml", [])) is None  # no use_gpu
    assert ray_launcher.gpu_failure_in(ControllerError(RuntimeError("segfault")), gpu_config()) is None


def test_gpu_workers_without_a_gpu_each_are_a_config_error():
    """Ray Train accepted ``use_gpu`` with ``{"GPU": 0}`` per worker: the workers got none, and their NCCL
    process group failed (or, with the message above, was blamed on the nodes' torch)."""
    with pytest.raises(UserError) as said:
        gpu_config(**{"runtime.gpus_per_worker": "0"})
    assert "runtime.gpus_per_worker=0 with runtime.use_gpu=true" in str(said.value)
    assert "\n" not in str(said.value)
    local = ["runtime.use_gpu=true", "runtime.gpus_per_worker=0"]  # the local backend does not read it
    assert load_config("configs/tiny.yaml", local).runtime.gpus_per_worker == 0


def test_only_what_is_short_now_is_held_against_the_autoscalers_cap(joined, caplog):
    """4 CPUs now cover the 2 workers' CPUs: a config that counts fewer (its head group left out) names the
    GPUs only; a config Ray cannot read from here (a Ray client) is unknown: a warning, not a refusal."""
    joined({"CPU": 1, "GPU": 1})
    with pytest.raises(UserError) as said:
        ray_launcher.check_cluster_resources(gpu_config())
    assert "grows it to at most 1 GPUs: the run could never start" in str(said.value)

    def unreadable():
        raise RuntimeError("Ray client: no GCS here")

    joined(unreadable)
    with caplog.at_level(logging.WARNING, logger="metarec"):
        ray_launcher.check_cluster_resources(gpu_config())
    assert "Ctrl-C if none will" in caplog.text


def test_a_fraction_of_a_gpu_per_worker_with_several_workers_is_a_config_error():
    """rt23: ``runtime.gpus_per_worker=0.5`` with 2 workers: Ray Train packed both onto one GPU and NCCL
    refused the two ranks ("Duplicate GPU detected", ray-project/ray#48012), after Ray had started."""
    with pytest.raises(UserError) as said:  # a config error: before Ray starts
        gpu_config(**{"runtime.gpus_per_worker": "0.5"})
    text = str(said.value)
    assert "runtime.gpus_per_worker=0.5 with runtime.num_workers=2" in text and "\n" not in text
    assert "Duplicate GPU detected" in text and "runtime.placement_strategy=STRICT_SPREAD" in text
    # One worker on part of a GPU, workers kept on separate nodes, one whole GPU, or no GPU: accepted (more
    # than one GPU per worker is refused: tests/unit/test_rt24_runtime.py).
    for fine in (
        {"runtime.gpus_per_worker": "0.5", "runtime.num_workers": "1"},
        {"runtime.gpus_per_worker": "0.5", "runtime.placement_strategy": "STRICT_SPREAD"},
        {"runtime.gpus_per_worker": "1"},
        {"runtime.gpus_per_worker": "0.5", "runtime.use_gpu": "false"},
    ):
        assert gpu_config(**fine).runtime.gpus_per_worker == float(fine["runtime.gpus_per_worker"])
    local = ["runtime.use_gpu=true", "runtime.gpus_per_worker=0.5", "runtime.num_workers=2"]
    assert load_config("configs/tiny.yaml", local).runtime.backend == "local"  # refused by `train` instead
