"""Session 22 (ray22): ``eval.workers: N`` (``metarec evaluate --workers N``) refused a cluster with fewer
than N CPUs now, also one that autoscales and has no worker node yet: its actors would have started on the
nodes the autoscaler adds. The cluster's autoscaler reports its node groups (min and max counts, resources
per node) to the GCS as the cluster config, which Ray Train's worker group and Ray Data's autoscaler read
for the same question; with a group that can grow to enough CPUs the check now warns in one line and the
actors wait for the nodes. A fixed-size cluster (no config, or no group that grows) is refused as before,
and so is one whose autoscaler cannot reach N.

The module's real cluster (4 CPUs, 127.0.0.1) has no autoscaler: each test writes into the GCS what an
autoscaler reports (the cluster config under Ray's key), and removes it."""

from __future__ import annotations

import logging

import pytest

from metarec_dist.errors import UserError
from metarec_dist.runtime.eval_pool import check_free_cpus

pytestmark = pytest.mark.integration


@pytest.fixture
def reported(ray_cluster):
    """``reported(*groups)``: the GCS holds the cluster config of node ``groups`` ``(cpus, min, max)``."""
    from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, GCS_AUTOSCALER_STATE_NAMESPACE
    from ray.core.generated import autoscaler_pb2
    from ray.experimental import internal_kv

    def report(*groups: tuple[int, int, int]) -> None:
        config = autoscaler_pb2.ClusterConfig()
        for i, (cpus, least, most) in enumerate(groups):
            config.node_group_configs.add(
                name=f"g{i}", resources={"CPU": cpus}, min_count=least, max_count=most
            )
        internal_kv._internal_kv_put(
            GCS_AUTOSCALER_CLUSTER_CONFIG_KEY,
            config.SerializeToString(),
            overwrite=True,
            namespace=GCS_AUTOSCALER_STATE_NAMESPACE,
        )

    yield report
    internal_kv._internal_kv_del(GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, namespace=GCS_AUTOSCALER_STATE_NAMESPACE)


def test_an_autoscaling_cluster_with_too_few_cpus_now_is_a_warning(reported, caplog):
    reported((4, 1, 1), (8, 0, 2))  # the head's group, and workers of 8 CPUs: none yet, up to 2
    with caplog.at_level(logging.WARNING, logger="metarec"):
        assert check_free_cpus(6) is True  # the actors wait for the autoscaler's nodes
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "\n" not in said[0], said
    assert said[0].startswith("eval.workers (--workers) 6: the Ray cluster has 4 CPUs now")
    assert "grow it to 20 CPUs" in said[0]


def test_a_fixed_size_cluster_or_one_that_cannot_grow_enough_is_refused(reported):
    with pytest.raises(UserError, match=r"--workers\) 6: the Ray cluster has 4 CPUs \(one per"):
        check_free_cpus(6)  # no autoscaler: no cluster config
    reported((4, 1, 1), (8, 2, 2))  # node groups at their max: fixed size
    with pytest.raises(UserError, match=r"--workers\) 6: the Ray cluster has 4 CPUs \(one per"):
        check_free_cpus(6)
    reported((4, 1, 1), (8, 0, 2))
    with pytest.raises(UserError, match=r"4 CPUs \(its autoscaler grows it to at most 20\).*at most 20"):
        check_free_cpus(21)


def test_the_actors_wait_for_the_autoscaler_and_its_failure_is_one_line(reported, monkeypatch):
    from metarec_dist.runtime import eval_pool

    reported((4, 1, 1), (8, 0, 2))
    monkeypatch.setattr(eval_pool, "START_S", 0.5)
    monkeypatch.setattr(eval_pool, "AUTOSCALE_START_S", 2.0)  # no autoscaler runs: no node comes
    with pytest.raises(UserError) as err:
        eval_pool.actor_pool(6)
    text = str(err.value)
    assert "did not start within 2 s" in text and "its autoscaler added too few nodes in time?" in text
    assert "\n" not in text and eval_pool._POOL is None
