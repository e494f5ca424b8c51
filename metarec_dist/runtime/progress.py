"""Progress from Ray workers to the driver: rank 0 pushes (step, metrics) to a small actor, the driver polls
it and draws the bar. Fire-and-forget ``.remote()`` calls, so training never waits on the driver."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import ray


@ray.remote(num_cpus=0)
class ProgressActor:
    def __init__(self) -> None:
        self.updates: list[tuple[int, dict[str, Any]]] = []

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        self.updates.append((step, metrics))

    def drain(self) -> list[tuple[int, dict[str, Any]]]:
        out, self.updates = self.updates, []
        return out


class ActorProgressLogger:
    """A MetricLogger (on rank 0) that forwards scalar metrics to the driver's ProgressActor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def log(self, metrics: dict[str, Any], step: int) -> None:
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        self.actor.update.remote(step, scalars)

    def close(self) -> None:
        return None


def run_with_progress(fit: Callable[[], Any], actor: Any, sink: Any, poll_s: float = 0.5) -> Any:
    """Run ``fit()`` in a thread while feeding the actor's updates to ``sink`` (a MetricLogger)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fit()
        except BaseException as exc:  # re-raised on the caller's thread below
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll_s)
        for step, metrics in ray.get(actor.drain.remote()):
            sink.log(metrics, step)
    for step, metrics in ray.get(actor.drain.remote()):
        sink.log(metrics, step)
    if "error" in result:
        raise result["error"]
    return result["value"]
