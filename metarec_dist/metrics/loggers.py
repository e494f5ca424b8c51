"""Metric loggers with a two-method interface: ``log(metrics, step)`` and ``close()``.

Only rank 0 gets a real logger; every other rank gets ``NullLogger`` so the trainer never branches on rank.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

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

    def log(self, metrics: dict[str, Any], step: int) -> None:
        shown = {k: v for k, v in metrics.items() if not self.keys or k in self.keys}
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
        log.info("step %d %s", step, text)

    def close(self) -> None:
        return None


METRICS_FILE = "metrics.jsonl"


class JsonlLogger:
    """Every logged step as one JSON line, ``{"step": N, <metric>: value, ...}``, appended to
    ``<run folder>/metrics.jsonl``: the training and validation curve of a run without W&B (what
    transformers' Trainer keeps as ``log_history``), read by any JSON tool. Opened at the first line, so a
    run refused at its resume adds no file. A resumed run appends: the steps between its checkpoint and the
    interruption are logged twice, and the later line of a step is the one the run continued from."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[str] | None = None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.file is None:
            self.file = self.path.open("a", encoding="utf-8")
        row = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()  # a line per step even if the run is killed

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _plain(value: Any) -> Any:
    """A JSON value: numbers as numbers (NaN and infinities, not in JSON, as null), lists and dicts (the
    final validation's per-K table) element by element, anything else as text."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


class MultiLogger:
    def __init__(self, *loggers: MetricLogger) -> None:
        self.loggers = loggers

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for lg in self.loggers:
            lg.log(metrics, step)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


def wandb_run_id(logger: MetricLogger) -> str | None:
    """The W&B run id ``logger`` logs to (a ``MultiLogger``'s W&B logger's); None without W&B."""
    if isinstance(logger, MultiLogger):
        return next((rid for lg in logger.loggers if (rid := wandb_run_id(lg)) is not None), None)
    return getattr(logger, "wandb_run_id", None)


class PendingWandb:
    """The W&B logger, made only by ``start()``. ``metarec train`` starts it once the run is known to train:
    after the resume checks and only when steps are left, so a refused resume or a re-run of a finished run
    starts no W&B run (offline: adds no ``offline-run-*`` folder to the run folder, logs no refused config).
    Before the start it logs nothing and names no W&B run."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make
        self.logger: Any = None

    def start(self) -> None:
        if self.logger is None:
            self.logger = self.make()

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.logger is not None:
            self.logger.log(metrics, step)

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()

    @property
    def wandb_run_id(self) -> str | None:
        return getattr(self.logger, "wandb_run_id", None)

    @property
    def record(self) -> dict[str, Any] | None:
        """The started W&B run's record (``wandb_logger.used_run``); None before the start."""
        return getattr(self.logger, "record", None)


def start_wandb(logger: MetricLogger) -> None:
    """Starts the W&B run of ``logger`` (a ``MultiLogger`` from ``build_logger(..., defer_wandb=True)``);
    nothing without one, or when it has started."""
    for part in getattr(logger, "loggers", (logger,)):
        if isinstance(part, PendingWandb):
            part.start()


def build_logger(
    logging_cfg: Any,
    run_name: str,
    storage_path: str,
    config: dict[str, Any],
    is_main: bool,
    directory: Path | None = None,
    extra: tuple[MetricLogger, ...] = (),
    defer_wandb: bool = False,
) -> MetricLogger:
    """On rank 0: ``extra`` loggers (progress bar, ...), ``metrics.jsonl`` in the run folder ``directory``
    when it is on this machine, console lines when verbose, and W&B unless ``logging.wandb=off``, started
    here or, with ``defer_wandb``, by ``start_wandb``. Elsewhere: nothing."""
    if not is_main:
        return NullLogger()
    loggers: list[MetricLogger] = list(extra)
    if directory is not None:
        loggers.append(JsonlLogger(directory / METRICS_FILE))
    if logging_cfg.verbose:
        loggers.append(ConsoleLogger(CONSOLE_KEYS))
    if logging_cfg.wandb != "off":
        from metarec_dist.metrics.wandb_logger import WandbLogger, run_id, wandb_mode

        loggers.append(
            PendingWandb(
                lambda: WandbLogger(
                    logging_cfg.project,
                    logging_cfg.entity,
                    run_name,
                    run_id(run_name, storage_path),
                    config,
                    wandb_mode(logging_cfg.wandb),
                    directory,
                    setting=logging_cfg.wandb,
                )
            )
        )
    logger = MultiLogger(*loggers)
    if not defer_wandb:
        try:
            start_wandb(logger)
        except BaseException:
            logger.close()  # the progress bar ends its line before the error is printed
            raise
    return logger


CONSOLE_KEYS = ("loss", "query_loss", "adaptation_gain", "val/ndcg@10@k3", "tasks_per_s", "lr")
