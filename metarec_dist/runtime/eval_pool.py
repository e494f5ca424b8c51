"""Ray actors that run evaluation batches (``eval.workers: N``): the model travels to each actor once per
evaluation, then the actors pull batch indices as they finish (a slow batch does not hold up the others),
each with its next batch already queued.

One pool per process, kept between evaluations (the grid search scores one setting after another, then the
test users, the baseline and popularity): starting an actor (a Python process importing torch) costs
seconds, shipping a model to a warm one milliseconds. Each actor takes one CPU and runs torch with
``threads`` intra-op threads, so N actors use N cores.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import ray

from metarec_dist.errors import UserError
from metarec_dist.eval.distributed import call_batch, ordered_results
from metarec_dist.runtime.ray_launcher import check_ray_address, init_ray

log = logging.getLogger("metarec")
_POOL: ActorPool | None = None
IN_FLIGHT = 2  # batches queued per actor
# How long the free CPUs may take to cover the workers: the cluster's view of them lags a kill by up to a
# second (the pool of another size this process stopped just before, bench/scale.py).
FREE_WAIT_S = 5.0
# How long the actors may take to start (a process importing torch: seconds; a minute on a busy machine)
# once the CPUs were seen free: another job may take them first, and the actors would wait for ever.
START_S = 120.0
# ... and on a cluster that autoscales, where they wait for the nodes its autoscaler adds (cloud instances:
# minutes each to boot and join).
AUTOSCALE_START_S = 900.0


@ray.remote(num_cpus=1)
class _BatchWorker:
    def __init__(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.key: str | None = None
        self.fn: Callable[[Any, int], Any] | None = None
        self.payload: Any = None

    def ready(self) -> bool:
        return True

    def load(self, key: str, fn: Callable[[Any, int], Any], payload: Any) -> None:
        self.key, self.fn, self.payload = key, fn, payload

    def run(self, key: str, index: int) -> Any:
        if key != self.key or self.fn is None:
            raise RuntimeError(f"batch {index} of evaluation {key} reached an actor holding {self.key}")
        return call_batch(self.fn, self.payload, index)  # an error comes back as a result: map raises it

    def unload(self) -> None:
        self.key = self.fn = self.payload = None


class ActorPool:
    """``workers`` Ray actors, each scoring whole batches with the payload it was given."""

    def __init__(self, workers: int, threads: int = 1) -> None:
        check_ray_address()
        init_ray()
        self.autoscaling = check_free_cpus(workers)  # the actors wait for the nodes an autoscaler adds
        self.start_s = AUTOSCALE_START_S if self.autoscaling else START_S
        self.workers = workers
        self.actors = [_BatchWorker.remote(threads) for _ in range(workers)]
        try:
            self._wait_started()
        except BaseException:  # too slow, Ctrl-C: actors still waiting for a CPU would otherwise stay queued
            self.close()
            raise

    def _wait_started(self) -> None:
        ready = [a.ready.remote() for a in self.actors]
        _, pending = ray.wait(ready, num_returns=len(ready), timeout=self.start_s)
        if pending:
            total, free = _cpus()
            why = (
                "its autoscaler added too few nodes in time?"
                if self.autoscaling
                else "other work took them first?"
            )
            raise UserError(
                f"eval.workers (--workers) {self.workers}: {len(pending)} of the evaluation workers did not "
                f"start within {self.start_s:.0f} s ({free} of the Ray cluster's {total} CPUs free now: "
                f"{why}); {_FEWER}"
            )

    def map(self, fn: Callable[[Any, int], Any], payload: Any, n: int) -> list[Any]:
        """``[fn(payload, i) for i in range(n)]`` on the actors, in batch order."""
        if n == 0:
            return []
        if not self.actors:  # stopped by an interrupt or an error: its batches would come back as None
            raise RuntimeError("this evaluation actor pool was stopped; start another (actor_pool)")
        key = uuid.uuid4().hex
        try:
            ref = ray.put(payload)  # stored once; each actor reads it once
            ray.get([a.load.remote(key, fn, ref) for a in self.actors])
            results: list[Any] = [None] * n
            pending: dict[Any, tuple[Any, int]] = {}
            todo = iter(range(n))
            # Two batches queued per actor: when one finishes the next is already there, so the actor does
            # not sit idle for the round trip to this process (on a busy 2-core machine ~15% of its time).
            for _ in range(IN_FLIGHT):
                for actor in self.actors:
                    self._submit(actor, key, todo, pending)
            while pending:
                (done,), _ = ray.wait(list(pending), num_returns=1)
                actor, index = pending.pop(done)
                results[index] = ray.get(done)
                self._submit(actor, key, todo, pending)
        except BaseException:
            # Ctrl-C, SIGTERM: an actor runs its calls in order, so an `unload` would wait for the batches
            # still queued on it (up to IN_FLIGHT whole batches): stop the actors instead.
            if _POOL is self:
                close_actor_pool()
            else:
                self.close()
            raise
        ray.get([a.unload.remote() for a in self.actors])
        return ordered_results(results)

    @staticmethod
    def _submit(actor: Any, key: str, todo: Any, pending: dict[Any, tuple[Any, int]]) -> None:
        index = next(todo, None)
        if index is not None:
            pending[actor.run.remote(key, index)] = (actor, index)

    def close(self) -> None:
        if ray.is_initialized():  # after ray.shutdown() the actors are gone already
            for actor in self.actors:
                ray.kill(actor)
        self.actors = []


_FEWER = "ask for fewer (--workers 1 scores in this process, without Ray), or run when that work has ended"


def _cpus() -> tuple[int, int]:
    """The Ray cluster's CPUs: all of them, and those free now."""
    return int(ray.cluster_resources().get("CPU", 0)), int(ray.available_resources().get("CPU", 0))


def autoscaled_cpus() -> float | None:
    """The most CPUs the cluster's autoscaler may grow it to, from the cluster config the autoscaler reports
    to the GCS (its node groups and their max counts: what Ray Train's worker group and Ray Data's
    autoscaler read); None for a cluster of fixed size: no config (no autoscaler), or no node group that can
    grow (max_count -1: unbounded, or above min_count)."""
    from ray._private.state import state

    config = state.get_cluster_config()
    groups = [g for g in (config.node_group_configs if config else []) if g.resources and g.max_count != 0]
    if not any(g.max_count == -1 or g.max_count > g.min_count for g in groups):
        return None
    return float((state.get_max_resources_from_cluster_config() or {}).get("CPU", 0))


def check_free_cpus(workers: int) -> bool:
    """``UserError`` when the cluster cannot give each of ``workers`` actors a CPU: it has too few, or too
    few are free (other jobs' actors and tasks hold them). Actors asked for then were queued until CPUs came
    free: ``metarec evaluate --workers N`` on a busy joined cluster waited in silence, for ever. A cluster
    that can autoscale to enough CPUs (``autoscaled_cpus``) is not refused for having too few now (no worker
    node yet): said in one line, and True: the actors wait for the nodes its autoscaler adds."""
    total, free = _cpus()
    if workers > total:
        most = autoscaled_cpus()
        if most is not None and workers <= most:
            log.warning(
                "eval.workers (--workers) %d: the Ray cluster has %d CPUs now and its autoscaler can grow it "
                "to %s; the evaluation workers wait up to %.0f s for the nodes it adds",
                workers,
                total,
                "any size" if most >= sys.maxsize else f"{most:g} CPUs",
                AUTOSCALE_START_S,
            )
            return True
        grows = "" if most is None else f" (its autoscaler grows it to at most {most:g})"
        raise UserError(
            f"eval.workers (--workers) {workers}: the Ray cluster has {total} CPUs{grows} (one per "
            f"evaluation worker); ask for at most {max(total, int(most or 0))}, or join a larger cluster "
            "(RAY_ADDRESS)"
        )
    deadline = time.monotonic() + FREE_WAIT_S
    while free < workers and time.monotonic() < deadline:
        time.sleep(0.2)
        total, free = _cpus()
    if free < workers:
        raise UserError(
            f"eval.workers (--workers) {workers}: only {free} of the Ray cluster's {total} CPUs are free "
            f"(one per evaluation worker; other jobs hold the rest); {_FEWER}"
        )
    return False


def actor_pool(workers: int, threads: int = 1) -> ActorPool:
    """This process's pool of ``workers`` actors (started on first use, replaced when the size changes)."""
    global _POOL
    if _POOL is None or _POOL.workers != workers:
        close_actor_pool()
        _POOL = ActorPool(workers, threads)
    return _POOL


def close_actor_pool(shutdown: bool = False) -> None:
    """Stop the pool's actors; ``shutdown``: also disconnect from Ray (stopping a cluster it started)."""
    global _POOL
    if _POOL is not None:
        _POOL.close()
        _POOL = None
        if shutdown:
            from metarec_dist.runtime.ray_launcher import shutdown_ray

            shutdown_ray()
