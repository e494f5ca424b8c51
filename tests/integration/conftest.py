"""A real Ray local cluster (127.0.0.1) shared by the integration tests of a module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    # 4 logical CPUs on a 2-core machine: 2 training workers (1 CPU each) plus room for Ray Data and the
    # Train controller, so the data stream never waits for a CPU the workers hold.
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level="ERROR",
    )
    yield
    ray.shutdown()
