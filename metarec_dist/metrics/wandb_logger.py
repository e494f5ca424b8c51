"""Weights & Biases on rank 0.

- Mode: ``logging.wandb=auto`` is online when ``WANDB_API_KEY`` is set (or WANDB_MODE says so), offline
  otherwise; ``offline``/``online`` force it. Every other ``WANDB_*`` variable (project, entity, dir, tags)
  is read by wandb itself. A run that cannot start (no key, no network: W&B gives up after its
  ``init_timeout``, 90 s) is a one-line ``UserError``; under ``auto`` with a key it is logged offline instead.
- The run id is derived from the Ray run name (plus a hash of the storage path), with ``resume="allow"``:
  re-running or auto-restarting the same run name continues the same W&B run.
- The resolved config is logged with secrets redacted; every metric is plotted against ``meta_step``.
- A list of row dicts logged under a key ending in ``table`` becomes a ``wandb.Table``, and an evaluation
  table also gets its NDCG@10-vs-K plot as a ``wandb.Image``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

from metarec_dist.metrics.redact import redact

log = logging.getLogger("metarec")


def wandb_mode(setting: str) -> str | None:
    """None: let ``WANDB_MODE`` decide; else "online"/"offline"/"disabled"."""
    if setting == "off":
        return "disabled"
    if setting in ("online", "offline"):
        return setting
    if os.environ.get("WANDB_MODE"):
        return None
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def run_id(run_name: str, storage_path: str) -> str:
    digest = hashlib.sha1(storage_path.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '-', run_name)[:48]}-{digest}"


def project_name(project: str) -> str:
    """The project W&B logs to: ``WANDB_PROJECT`` when set, else ``logging.project``."""
    return os.environ.get("WANDB_PROJECT") or project


def entity_name(entity: str | None) -> str | None:
    """The entity W&B logs to: ``WANDB_ENTITY`` when set, else ``logging.entity`` (None: the key's own)."""
    return os.environ.get("WANDB_ENTITY") or entity


class WandbLogger:
    def __init__(
        self,
        project: str,
        entity: str | None,
        run_name: str,
        run_id: str,
        config: dict[str, Any],
        mode: str | None,
        directory: Path | None = None,
        setting: str = "online",
    ) -> None:
        import wandb

        self.wandb = wandb
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        init = dict(
            project=project_name(project),
            entity=entity_name(entity),
            name=run_name,
            id=run_id,
            resume="allow",
            config=redact(config),
            dir=str(directory) if directory is not None else None,
        )
        try:
            self.run = wandb.init(mode=mode, **init)
        except wandb.errors.Error as exc:
            # No key, no network (wandb gives up after settings.init_timeout, 90 s), a project the key
            # may not write to: W&B's own traceback names none of our settings.
            if not (setting == "auto" and mode == "online"):
                raise start_error(setting, exc, mode) from None
            # auto chose online because a key is set, but W&B is unreachable: the run still trains,
            # logged offline (an explicit online, or WANDB_MODE=online, is an error instead).
            log.warning("W&B: %s; logging offline instead (logging.wandb=auto)", first_line(exc))
            self.run = wandb.init(mode="offline", **init)
        self.run.define_metric("meta_step")
        self.run.define_metric("*", step_metric="meta_step")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        payload: dict[str, Any] = {"meta_step": step}
        for key, value in metrics.items():
            if key.endswith("table") and isinstance(value, list) and value and isinstance(value[0], dict):
                payload[key] = self.wandb.Table(
                    columns=list(value[0]), data=[list(r.values()) for r in value]
                )
                plot = _ndcg_vs_k(value)
                if plot is not None:
                    payload[f"{key}_ndcg_vs_k"] = self.wandb.Image(plot)
            else:
                payload[key] = value
        self.run.log(payload)

    @property
    def wandb_run_id(self) -> str:
        """The id W&B logs to (checkpoints store it)."""
        return self.run.id

    @property
    def path(self) -> str:
        return f"{self.run.entity or '-'}/{self.run.project}/{self.run.id}"

    def close(self) -> None:
        self.run.finish()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def start_error(setting: str, exc: BaseException, mode: str | None = "online") -> Exception:
    """The one-line error for a W&B run that could not start: what W&B said, and the settings to change."""
    from metarec_dist.errors import UserError

    where = f"WANDB_MODE={os.environ['WANDB_MODE']}" if os.environ.get("WANDB_MODE") else ""
    given = where if setting == "auto" and where else f"logging.wandb={setting}"
    said = first_line(exc)
    if "project" in said.lower() or "entity" in said.lower():
        hint = "set logging.project / logging.entity (or WANDB_PROJECT / WANDB_ENTITY) to valid names"
    elif mode == "offline":
        hint = "see the log under the run folder's wandb/, or use --set logging.wandb=off"
    else:
        hint = (
            "online logging needs WANDB_API_KEY (or `wandb login`) and the network; without them use "
            "--set logging.wandb=offline (upload later with `wandb sync`) or --set logging.wandb=off"
        )
    return UserError(f"{given}: W&B could not start the run ({said}); {hint}")


def _ndcg_vs_k(rows: list[dict[str, Any]]) -> Any:
    """Rows with ``shots`` and ``ndcg@10`` (optionally ``method``) -> the figure, else None."""
    if not all("shots" in r and "ndcg@10" in r for r in rows):
        return None
    from metarec_dist.metrics.plots import metric_vs_k_figure

    curves: dict[str, list] = {}
    for r in rows:
        curves.setdefault(r.get("method", "model"), []).append((r["shots"], r["ndcg@10"], None, None))
    return metric_vs_k_figure(dict(sorted(curves.items())))
