"""Session 20 (rayaddr20): Ctrl-C of ``metarec train`` on a cluster joined through ``RAY_ADDRESS``.

The driver's ``ray.shutdown`` ends the job, but the raylets kill its processes after it returned: measured
against a real head (Ray 2.60, 2 workers, a checkpoint every meta-step, 5 runs), once the Train workers
were still alive 0.15 s after the CLI had printed "a re-run ... resumes the run from meta-step N", free to
save a newer checkpoint than the one named (none did in those runs). The driver now kills the job's actors,
the Train controller first, and waits until the GCS reports them dead before it disconnects (then measured,
6 runs: the workers gone 0.15-0.6 s after the signal, always before the message).

The cluster here is a stand-in for the GCS's actor table and the core worker's kill.
"""

from __future__ import annotations

from typing import Any

import pytest

from metarec_dist.runtime import ray_launcher

JOB = "01000000"


class FakeCluster:
    """A Train controller owning two workers, the progress actor, and a detached actor of another
    library. A worker killed while its controller lives is replaced (``runtime.max_failures``); the
    controller's workers die with it, each reported dead one poll after its kill."""

    def __init__(self) -> None:
        self.actors: dict[str, dict[str, Any]] = {}
        self.dying: list[str] = []
        self.killed: list[str] = []
        self.next_id = 1
        self.controller = self.add("TrainController")
        for _ in range(2):
            self.add("RayTrainWorker")
        self.add("ProgressActor")
        self.add("_StatsActor", detached=True)

    def add(self, name: str, detached: bool = False) -> str:
        actor_id = f"{self.next_id:032x}"
        self.next_id += 1
        self.actors[actor_id] = {
            "ActorID": actor_id,
            "ActorClassName": name,
            "IsDetached": detached,
            "State": "ALIVE",
        }
        return actor_id

    def table(self, job_id: Any = None) -> dict[str, dict[str, Any]]:
        assert job_id.hex() == JOB
        for actor_id in self.dying:  # a process is gone (and reported) by the next look
            self.actors[actor_id]["State"] = "DEAD"
        self.dying = []
        return {k: dict(v) for k, v in self.actors.items()}

    def kill_actor(self, actor_id: Any, no_restart: bool) -> None:
        actor = self.actors[actor_id.hex()]
        self.killed.append(actor["ActorClassName"])
        self.dying.append(actor["ActorID"])
        controller_alive = self.actors[self.controller]["State"] == "ALIVE"
        if actor["ActorClassName"] == "RayTrainWorker" and controller_alive:
            self.add("RayTrainWorker")  # the controller restarts its worker group
        if actor["ActorID"] == self.controller:
            self.dying += [
                a["ActorID"] for a in self.actors.values() if a["ActorClassName"] == "RayTrainWorker"
            ]

    def running(self) -> list[str]:
        return sorted(a["ActorClassName"] for a in self.actors.values() if a["State"] != "DEAD")


@pytest.fixture
def cluster(monkeypatch) -> FakeCluster:
    import ray
    from ray._private import state, worker

    fake = FakeCluster()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(
        ray, "get_runtime_context", lambda: type("Ctx", (), {"get_job_id": lambda self: JOB})()
    )
    monkeypatch.setattr(state, "actors", fake.table)
    monkeypatch.setattr(worker.global_worker, "core_worker", fake, raising=False)
    return fake


def test_ctrl_c_on_a_joined_cluster_stops_the_workers_before_the_driver_leaves(monkeypatch, cluster):
    import ray

    at_shutdown = []
    monkeypatch.setattr(ray, "shutdown", lambda **kw: at_shutdown.append(cluster.running()))

    def fit() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ray_launcher.fit_until_stopped(fit)
    # When the driver disconnects (and the CLI then names the checkpoint to resume from), only the
    # cluster's own detached actor still runs; no worker was replaced.
    assert at_shutdown == [["_StatsActor"]]
    assert cluster.killed[0] == "TrainController"
    assert "RayTrainWorker" not in cluster.killed  # they died with their controller


def test_actors_that_do_not_stop_are_said(monkeypatch, cluster, caplog):
    monkeypatch.setattr(cluster, "kill_actor", lambda actor_id, no_restart: None)  # a kill that never lands
    monkeypatch.setattr(ray_launcher, "STOP_TIMEOUT_S", 0.05)
    with caplog.at_level("WARNING", logger="metarec"):
        ray_launcher.stop_joined_job()
    said = "4 of this run's Ray actors (ProgressActor, RayTrainWorker, TrainController) may still run"
    assert said in caplog.text


def test_an_actor_table_that_cannot_be_read_does_not_stop_the_interrupt(monkeypatch, cluster, caplog):
    import ray
    from ray._private import state

    def unreadable(job_id=None):
        raise ray.exceptions.RaySystemError("Ray has not been started yet")

    monkeypatch.setattr(state, "actors", unreadable)
    shut = []
    monkeypatch.setattr(ray, "shutdown", lambda **kw: shut.append(kw))

    def fit() -> None:
        raise KeyboardInterrupt

    with caplog.at_level("WARNING", logger="metarec"), pytest.raises(KeyboardInterrupt):
        ray_launcher.fit_until_stopped(fit)
    assert shut == [{"wait_for_processes": True}]
    assert "may still run after the interrupt" in caplog.text
