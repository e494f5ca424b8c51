"""``metarec serve --gpus-per-replica F``: each replica gets ``F`` GPUs the Ray Serve way
(``ray_actor_options={"num_gpus": F}``) and moves its model to ``cuda``; a cluster without the GPUs asked for
is refused in one line before anything is deployed. No GPU here: torch.cuda is patched where a replica
resolves its device, the ``meta`` device stands in for a GPU where the model is placed, and Ray itself is
stubbed where the cluster's resources are read (no cluster is started)."""

from __future__ import annotations

import pytest
import torch

from metarec_dist.cli import build_parser, main
from metarec_dist.errors import UserError
from metarec_dist.runtime import serving


def test_the_option_parses():
    parse = build_parser().parse_args
    assert parse(["serve", "--checkpoint", "x"]).gpus_per_replica == 0.0
    assert parse(["serve", "--checkpoint", "x", "--gpus-per-replica", "0.5"]).gpus_per_replica == 0.5


@pytest.mark.parametrize("gpus", ["-1", "nan", "inf", "1.5"])
def test_a_wrong_number_is_one_line_before_anything_starts(gpus, tmp_path, capsys):
    assert main(["serve", "--checkpoint", str(tmp_path / "nothing"), "--gpus-per-replica", gpus]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --gpus-per-replica must be 0 (the CPU), a fraction") and "\n" not in err


def test_the_cluster_gpus_are_checked(caplog):
    serving.check_cluster_gpus(2, 0.0, 0.0, joined=False)  # the CPU: nothing asked
    serving.check_cluster_gpus(3, 0.1, 0.3, joined=False)  # fractions that fit, float sums aside
    serving.check_cluster_gpus(2, 1.0, 2.0, joined=True)
    with pytest.raises(
        UserError, match=r"^--replicas 2 x --gpus-per-replica 0.5 ask for 1 GPU\(s\); the Ray "
    ):
        serving.check_cluster_gpus(2, 0.5, 0.0, joined=False)
    with pytest.raises(UserError, match=r"at RAY_ADDRESS has none; drop --gpus-per-replica"):
        serving.check_cluster_gpus(1, 1.0, 0.0, joined=True)
    with pytest.raises(UserError, match=r"ask for 4 GPU\(s\); the Ray cluster started here .* has 2; lower"):
        serving.check_cluster_gpus(4, 1.0, 2.0, joined=False)
    serving.check_cluster_gpus(4, 1.0, 2.0, joined=True)  # an autoscaler may add GPU nodes: said
    assert "ask for 4 GPU(s) but the Ray cluster at RAY_ADDRESS has 2" in caplog.text


def test_no_gpu_in_the_cluster_is_one_line_before_anything_is_deployed(
    trained, tmp_path, monkeypatch, capsys
):
    """Through ``metarec serve``: the model loads, the cluster (stubbed: two CPUs, no GPU) is asked for its
    GPUs, and the refusal comes before Ray Serve starts."""
    import ray
    from ray import serve

    from metarec_dist.bench.serve_bench import free_port
    from metarec_dist.runtime import ray_launcher

    for key in (
        serving.PROXY_CALLBACK_ENV,
        serving.LIMIT_ENV,
        serving.OTHER_CALLBACK_ENV,
        *serving.SERVE_ENV,
    ):
        monkeypatch.delenv(key, raising=False)  # serve_model sets them: put back after the test
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_launcher, "check_ray_address", lambda: None)
    monkeypatch.setattr(ray_launcher, "init_ray", lambda **kwargs: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(serve, "start", lambda **kwargs: pytest.fail("Ray Serve was started"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # torch sees one, Ray counts none
    args = ["serve", "--checkpoint", str(trained().folder), "--port", str(free_port())]
    assert main([*args, "--gpus-per-replica", "1", "--replicas", "2"]) == 2
    err = capsys.readouterr().err.strip()
    want = "error: --replicas 2 x --gpus-per-replica 1 ask for 2 GPU(s); the Ray cluster started here"
    assert err.startswith(want) and "has none" in err and "\n" not in err


def test_the_deployment_asks_ray_serve_for_the_gpus():
    app = serving.build_app(None, 2, 1, gpus=0.5)
    deployment = app._bound_deployment
    assert deployment.ray_actor_options == {"num_cpus": 1, "num_gpus": 0.5}
    assert deployment.num_replicas == 2
    assert serving.build_app(None, 1, 3)._bound_deployment.ray_actor_options["num_gpus"] == 0.0


def test_a_replica_with_a_gpu_scores_on_cuda(one_gpu):
    assert serving.replica_device(0.0) is None
    assert serving.replica_device(0.5) == torch.device("cuda", 0)  # Ray's CUDA_VISIBLE_DEVICES: its first


def test_a_replica_without_a_usable_gpu_says_so():
    with pytest.raises(UserError, match=r"^--gpus-per-replica 1: Ray gave this replica GPU\(s\)"):
        serving.replica_device(1.0)


def test_a_replica_moves_its_model_and_says_where(trained):
    """On ``meta`` (a GPU's stand-in): the replica's copy of the model moves there, and GET / says so; on
    the CPU GET / is unchanged."""
    from metarec_dist.eval.recommend import Recommender

    folder = str(trained().folder)
    on_cpu = serving.RecommenderReplica(Recommender.load(folder), 1)
    assert "device" not in on_cpu.describe()
    replica = serving.RecommenderReplica(Recommender.load(folder), 1, torch.device("meta"))
    assert {p.device.type for p in replica.recommender.loaded.model.parameters()} == {"meta"}
    assert replica.describe()["device"] == "meta"
