"""``eval.workers: N`` on a cluster whose CPUs are taken by other work: one line at once, not a wait for
ever. Each evaluation actor asks for a CPU; with fewer free than N (another job's actors hold them) Ray
queued the actors and ``metarec evaluate --workers N`` sat silent until interrupted (found on a joined
``ray start --head`` with 2 CPUs, one held by another driver's actor)."""

from __future__ import annotations

import operator
import re
import time

import pytest

from metarec_dist.errors import UserError

pytestmark = pytest.mark.integration  # a Ray local cluster, started by the code under test


@pytest.fixture(scope="module")
def one_cpu_taken():
    """A local cluster of 2 CPUs (init_ray, as ``--workers`` starts it) with one held by an actor."""
    import ray

    from metarec_dist.runtime.eval_pool import close_actor_pool
    from metarec_dist.runtime.ray_launcher import init_ray, shutdown_ray

    mp = pytest.MonkeyPatch()
    mp.delenv("RAY_ADDRESS", raising=False)
    init_ray(num_cpus=2)

    @ray.remote(num_cpus=1)
    class Holder:
        def ping(self) -> int:
            return 1

    holder = Holder.remote()
    ray.get(holder.ping.remote())
    # The cluster's count of free CPUs can lag the actor's start: wait until it shows the held one (the
    # first test failed once in a loaded run, cause not seen; this is the one lag it depends on).
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 1, ray.available_resources()
    try:
        yield
    finally:
        close_actor_pool()
        shutdown_ray()
        mp.undo()


def _live_pool_actors() -> list[str]:
    from ray._private.state import actors

    return [
        a["ActorClassName"]
        for a in actors().values()
        if a["State"] != "DEAD" and "Batch" in a["ActorClassName"]
    ]


def test_too_few_free_cpus_is_one_line_naming_free_and_total(one_cpu_taken, monkeypatch):
    from metarec_dist.runtime import eval_pool

    monkeypatch.setattr(eval_pool, "FREE_WAIT_S", 0.5)
    with pytest.raises(UserError) as err:
        eval_pool.actor_pool(2)
    msg = str(err.value)
    assert msg.startswith("eval.workers (--workers) 2: only 1 of the Ray cluster's 2 CPUs are free")
    assert "--workers 1" in msg and "\n" not in msg
    assert eval_pool._POOL is None and _live_pool_actors() == []


def test_more_workers_than_cpus_is_still_refused(one_cpu_taken):
    from metarec_dist.runtime import eval_pool

    with pytest.raises(UserError, match=r"--workers\) 3: the Ray cluster has 2 CPUs"):
        eval_pool.actor_pool(3)


def test_actors_that_never_start_are_stopped_with_one_line(one_cpu_taken, monkeypatch):
    """Another job takes the CPUs between the check and the actors' start: the actors wait START_S at most,
    then are stopped (none left queued on the cluster) and the error names the free CPUs."""
    from metarec_dist.runtime import eval_pool

    monkeypatch.setattr(eval_pool, "check_free_cpus", lambda workers: None)
    monkeypatch.setattr(eval_pool, "START_S", 1.0)
    with pytest.raises(UserError) as err:
        eval_pool.actor_pool(2)
    said = r"eval.workers \(--workers\) 2: [12] of the evaluation workers did not start within 1 s \([01] of "
    assert re.match(said + r"the Ray cluster's 2 CPUs free now", str(err.value))

    deadline = time.monotonic() + 10  # the GCS marks a killed actor dead within a moment
    while _live_pool_actors() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _live_pool_actors() == []


def test_a_pool_that_fits_the_free_cpu_starts_and_scores(one_cpu_taken):
    """The free CPU still serves one worker: the check refuses only what cannot start."""
    from metarec_dist.runtime import eval_pool

    pool = eval_pool.actor_pool(1)
    assert pool.map(operator.mul, 3, 4) == [0, 3, 6, 9]  # fn(payload, index); importable on the actor


def test_a_stopped_pool_refuses_to_map_instead_of_returning_nones():
    """After an interrupt the pool has no actors: a later ``map`` on it gave ``[None] * n`` as results."""
    from metarec_dist.runtime import eval_pool

    pool = object.__new__(eval_pool.ActorPool)
    pool.workers, pool.actors = 2, []
    with pytest.raises(RuntimeError, match="was stopped"):
        pool.map(operator.mul, 3, 4)


def test_ctrl_c_during_a_real_map_stops_the_actors_at_once(one_cpu_taken):
    """On a real cluster: Ctrl-C while the actor sleeps through its queued batches (batch i sleeps i s)
    kills it, and the pool is gone; nothing waits for the queue."""
    import signal

    from metarec_dist.runtime import eval_pool

    pool = eval_pool.actor_pool(1)
    assert pool.map(operator.call, time.sleep, 1) == [None]  # started: the next map is interrupted in flight

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.map(operator.call, time.sleep, 30)  # 435 s of batches
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert eval_pool._POOL is None
    deadline = time.monotonic() + 10
    while _live_pool_actors() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _live_pool_actors() == []
