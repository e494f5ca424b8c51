"""Weights & Biases on rank 0.

- Mode: ``logging.wandb=auto`` is online when ``WANDB_API_KEY`` is set (or WANDB_MODE says so), offline
  otherwise; ``offline``/``online`` force it. Every other ``WANDB_*`` variable (project, entity, dir, tags)
  is read by wandb itself. A run that cannot start (no key, no network: W&B gives up after its
  ``init_timeout``, 90 s) is a one-line ``UserError``; under ``auto`` with a key it is logged offline instead.
- The run id is derived from the run name (plus a hash of the storage path, and of the whole name when the
  id cannot hold it as it is: ``run_id``), with ``resume="allow"``: re-running or auto-restarting the same
  run name continues the same W&B run, and two run names never share one.
- Each row is logged at W&B step = meta-step, so the history goes on where the last one ended across resumes.
  An offline resume writes a second ``offline-run-*-<id>`` folder, whose steps W&B cannot know offline (it
  would restart at 0 and, synced, overwrite the first folder's rows); with the meta-step they follow them,
  and ``wandb sync`` of all the folders in one command (wandb 0.31 syncs the files of one run in order of
  start time, resuming it: wandb/wandb#10708) gives one run with the whole history.
- What the logging process used (entity, project, id, mode: its own ``WANDB_*`` environment, which on Ray
  may not be the driver's) is written to the run folder's ``WANDB_RECORD`` for the driver's summary.
- The resolved config is logged with secrets redacted; every metric is plotted against ``meta_step``.
- A list of row dicts logged under a key ending in ``table`` becomes a ``wandb.Table``, and an evaluation
  table also gets its NDCG@10-vs-K plot as a ``wandb.Image``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from metarec_dist.metrics.redact import redact

log = logging.getLogger("metarec")

# In the run folder: the W&B run the logging process (rank 0, maybe on another node) logged to.
WANDB_RECORD = ".wandb-run.json"


def wandb_mode(setting: str) -> str | None:
    """None: let ``WANDB_MODE`` decide; else "online"/"offline"/"disabled"."""
    if setting == "off":
        return "disabled"
    if setting in ("online", "offline"):
        return setting
    if os.environ.get("WANDB_MODE"):
        return None
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


RUN_ID_NAME = 48  # the run name's characters kept in a W&B run id


def run_id(run_name: str, storage_path: str) -> str:
    """The W&B run id of run ``run_name`` in ``storage_path``: the name (W&B's characters, at most
    ``RUN_ID_NAME`` of them) and a hash. A name kept as it is hashes the storage path alone, as ever (the
    id of such a run did not change); one cut or with other characters hashes the whole name too: two run
    names alike in their first 48 characters, or alike but for a '.' and a '-', got one id and so logged to
    one W&B run (online at the same time, or merged by ``wandb sync``)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", run_name)
    hashed = storage_path if safe == run_name and len(safe) <= RUN_ID_NAME else f"{storage_path}\0{run_name}"
    return f"{safe[:RUN_ID_NAME]}-{hashlib.sha1(hashed.encode()).hexdigest()[:8]}"


def offline_folders(run_dir: Path, rid: str) -> list[Path]:
    """The offline folders W&B wrote for run id ``rid`` in ``run_dir/wandb``, oldest first: one per session,
    ``offline-run-<start second>-<id>``, and W&B adds ``-1``, ``-2`` ... to the name of a second session
    started in the same second as an earlier one (a resume right after a start, a restarted worker)."""
    same = re.compile(rf"^offline-run-(\d{{8}}_\d{{6}})-{re.escape(rid)}(?:-(\d+))?$")
    found = [(m, p) for p in Path(run_dir).glob("wandb/offline-run-*") if (m := same.match(p.name))]
    return [p for _, p in sorted(found, key=lambda f: (f[0][1], int(f[0][2] or 0)))]


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
        check_env_mode()
        try:
            self.run = wandb.init(mode=mode, **init)
        except ValueError as exc:  # a setting W&B's own validation refuses (pydantic): several lines
            raise start_error(setting, exc, mode) from None
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
        self.first_step = next_step(self.run)
        self._skipped = False
        self.record = used_run(self.run)
        if directory is not None:
            write_record(directory, self.record)
        else:
            warn_if_elsewhere(self.record.get("sync_dir"))

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
        if step < self.first_step:
            self._skip(step)
            return
        # W&B step = meta-step: a resumed run's rows follow the earlier ones, offline too (module doc).
        self.run.log(payload, step=step)

    def _skip(self, step: int) -> None:
        """A resume re-trains the steps after its checkpoint that the W&B run has already logged: W&B keeps
        the first rows (it drops a step below its last one, warning each time); said once, here."""
        if not self._skipped:
            log.info(
                "W&B run %s already has rows up to step %d: the re-trained meta-steps from %d on are "
                "logged from step %d",
                self.run.id,
                self.first_step - 1,
                step,
                self.first_step,
            )
        self._skipped = True

    @property
    def wandb_run_id(self) -> str:
        """The id W&B logs to (checkpoints store it)."""
        return self.run.id

    @property
    def path(self) -> str:
        return f"{self.run.entity or '-'}/{self.run.project}/{self.run.id}"

    def close(self) -> None:
        self.run.finish()


def next_step(run: Any) -> int:
    """The W&B step of the run's next row: after an online resume the one after its last; offline, 0. 0 when
    W&B cannot say (``WANDB_MODE=shared`` raises, a loaded service may time out): nothing is skipped."""
    try:
        return int(run.step)
    except Exception as exc:  # whatever W&B raises here, logging goes on as before
        log.debug("W&B run.step: %s", first_line(exc))
        return 0


def used_run(run: Any) -> dict[str, Any]:
    """What a started W&B run logs to, as this process resolved it (its ``WANDB_*`` variables, the key's
    default entity): ``entity`` (None: not known offline), ``project``, ``id``, ``mode``, ``sync_dir`` (the
    offline folder of this session, None online) and ``url`` (None offline)."""
    mode = MODE_ALIASES.get(run.settings.mode, run.settings.mode)
    offline = mode == "offline"
    return {
        "entity": run.entity or None if mode != "disabled" else None,  # disabled: "dummy"
        "project": run.project,
        "id": run.id,
        "mode": mode,
        "sync_dir": str(run.settings.sync_dir) if offline else None,
        "url": None if offline else run.url,
    }


# W&B's older names for its modes (WANDB_MODE=dryrun is offline).
MODE_ALIASES = {"dryrun": "offline", "run": "online"}
ENV_MODES = ("online", "offline", "disabled", "shared", *MODE_ALIASES)


def check_env_mode() -> None:
    """``UserError`` for a ``WANDB_MODE`` W&B does not know: W&B refuses it with a several-line validation
    error, even when ``logging.wandb`` names the mode."""
    from metarec_dist.errors import UserError

    value = os.environ.get("WANDB_MODE")
    if value and value not in ENV_MODES:
        raise UserError(
            f"WANDB_MODE={value}: not a W&B mode; set it to online, offline or disabled, or unset it "
            "(logging.wandb then chooses: auto, online, offline, off)"
        )


def warn_if_elsewhere(sync_dir: str | None) -> None:
    """Offline files outside ``WANDB_DIR`` (no local run folder: cloud storage): W&B found it not writable
    and fell back to a temporary folder, saying nothing; on a cluster node it goes with the node."""
    wanted = os.environ.get("WANDB_DIR")
    if not (sync_dir and wanted):
        return
    if not Path(sync_dir).resolve().is_relative_to(Path(wanted).expanduser().resolve()):
        log.warning(
            "WANDB_DIR=%s is not writable here: W&B writes this run's offline files to %s instead; point "
            "WANDB_DIR at a writable folder that outlives the node, or sync them from there",
            wanted,
            Path(sync_dir).parent,
        )


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """``record`` into ``run_dir/WANDB_RECORD``, atomically (the driver may read it at any time)."""
    from metarec_dist.checkpoint import atomic_write_text

    atomic_write_text(Path(run_dir) / WANDB_RECORD, json.dumps(record, indent=1) + "\n")


def read_record(run_dir: str | Path | None, run_id: str | None = None) -> dict[str, Any] | None:
    """The W&B run the logging process of the run in ``run_dir`` used (None: none recorded there, a cloud
    run folder, or, given ``run_id``, a record of another run id: a run folder moved here)."""
    if run_dir is None or "://" in str(run_dir):
        return None
    try:
        record = json.loads((Path(run_dir) / WANDB_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or (run_id is not None and record.get("id") != run_id):
        return None
    return record


def describe(record: dict[str, Any]) -> str:
    """``entity/project/id (mode)`` of a record, as the summary prints it."""
    if record.get("mode") == "disabled":
        return "disabled: nothing was logged (WANDB_MODE=disabled where the run logged)"
    entity = record.get("entity") or "<default entity>"
    return f"{entity}/{record.get('project')}/{record.get('id')} ({record.get('mode')})"


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
