"""Session 22 (gpuuser22): ``metarec serve --gpus-per-replica 1`` on a cluster whose GPU torch cannot use
(a CPU-only torch; measured on a head started with ``--num-gpus=1``): the replica's one-line ``UserError``
(``replica_device``) was lost, and ``serve.run``'s "Deploying application metarec failed: Failed to update
the deployments ['recommender']" came out as a traceback after 24 s. Now the replica's line is the error."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from metarec_dist.errors import UserError
from metarec_dist.runtime.serving import APP_NAME, replica_user_error

REPLICA_SAID = (
    "--gpus-per-replica 1: Ray gave this replica GPU(s) (CUDA_VISIBLE_DEVICES=0) but torch sees no CUDA "
    "device in it (a CPU-only torch?); drop --gpus-per-replica"
)


def fake_serve(message: str) -> SimpleNamespace:
    deployment = SimpleNamespace(message=message)
    app = SimpleNamespace(deployments={"recommender": deployment})
    return SimpleNamespace(status=lambda: SimpleNamespace(applications={APP_NAME: app}))


def test_the_replicas_user_error_is_the_error():
    message = (
        "Failed to update the deployments ['recommender'].\n"
        "The deployment failed to start 3 times in a row.\n"
        'Traceback (most recent call last):\n  File "serving.py", line 412, in replica_device\n'
        f"metarec_dist.errors.UserError: {REPLICA_SAID}\n"
    )
    said = replica_user_error(fake_serve(message))
    assert isinstance(said, UserError) and str(said) == REPLICA_SAID


def test_another_failure_is_left_as_it_is():
    assert replica_user_error(fake_serve("RuntimeError: out of memory")) is None
    assert replica_user_error(SimpleNamespace(status=lambda: SimpleNamespace(applications={}))) is None


def test_gpus_per_replica_where_torch_sees_none_is_refused_before_ray_starts(monkeypatch, tmp_path):
    """On the cluster started here: refused in one line before the export is read or Ray starts (was: after
    Ray started and counted no GPU, 11 s)."""
    import torch

    from metarec_dist.runtime import ray_launcher, serving

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ray_launcher, "init_ray", lambda *a, **k: pytest.fail("Ray was started"))
    with pytest.raises(UserError) as said:
        serving.serve_model(str(tmp_path / "no-export"), port=18799, gpus_per_replica=1)
    assert str(said.value).startswith("--gpus-per-replica 1: torch ") and "\n" not in str(said.value)
