"""Metric loggers with a two-method interface: ``log(metrics, step)`` and ``close()``.

Only rank 0 gets a real logger; every other rank gets ``NullLogger`` so the trainer never branches on rank.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger("metarec")


class MetricLogger(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    def log(self, metrics: dict[str, Any], step: int) -> None:
        return None

    def close(self) -> None:
        return None


class ConsoleLogger:
    """One compact line per log call, through ``logging`` so ``--verbose``/quiet settings apply."""

    def __init__(self, keys: tuple[str, ...] = ()) -> None:
        self.keys = keys
        self.history: list[dict[str, Any]] = []

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.history.append({"step": step, **metrics})
        shown = {k: v for k, v in metrics.items() if not self.keys or k in self.keys}
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        log.info("step %d %s", step, text)

    def close(self) -> None:
        return None


class MultiLogger:
    def __init__(self, *loggers: MetricLogger) -> None:
        self.loggers = loggers

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for lg in self.loggers:
            lg.log(metrics, step)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()
