"""Checkpoints: engine shards + client state + a manifest written last; discovery, resume checks, and the
Checkpointer that saves and restores a run's stateful parts.

Layout of one checkpoint (``<run_dir>/checkpoints/step_000100/``)::

    engine/<tag>/...          the engine's files: DeepSpeed ZeRO shards (one per rank) or local safetensors
    engine/latest             DeepSpeed's tag file (written by global rank 0)
    client_state.json         meta-step, the stateful parts (train state; the task stream of one process, or
                              each rank's under ``ranks``), resolved config
    rng_rank<r>.safetensors   each rank's torch RNG state
    <part>.safetensors        a part's tensors, if it has any (early stopping's best weights)
    manifest.json             every file above with its size and sha256; written LAST, atomically

A checkpoint without a manifest is incomplete (a crash mid-save) and is never resumed from; a file whose
size or checksum differs from the manifest is named in the error. Nothing here unpickles: JSON, safetensors,
and the engines load their own files with ``weights_only`` where they can.

Safety rules, each kept by tests/integration/test_faults.py:
- a run folder with checkpoint folders of which none is complete is an error, never a fresh start;
- an existing step folder is never written over: it is moved aside (``<name>.old-1``) and named; pruning
  deletes it with the old checkpoints only when it is incomplete (an interrupted save);
- ``checkpoint.resume=false`` on a run folder that has checkpoints is refused (use a new run name);
- one run at a time holds a run folder (``metarec_dist.run_folder.RunLock``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from metarec_dist.errors import UserError, check_output_folder
from metarec_dist.run_folder import DATA_DIR, DATA_FOLDER, process_alive, recorded_data_folder

if TYPE_CHECKING:
    import torch
    from torch import nn

    from metarec_dist.config import CheckpointConfig, Config
    from metarec_dist.models.features import FeatureLayout
    from metarec_dist.models.recommender import SeqRecommender
    from metarec_dist.runtime.context import WorkerContext
    from metarec_dist.runtime.engine import TrainEngine

log = logging.getLogger("metarec")
T = TypeVar("T")

MANIFEST = "manifest.json"
CLIENT_STATE = "client_state.json"
# The client state's digest of the training users and their item sequences (the trainer's
# ``train_data_digest``): a resume on other data is refused, whatever settings made it.
TRAIN_DATA = "train_data_sha256"
# Its digest of the side-information tables (data.user_features / data.item_features, ``features_digest``):
# other feature files are other data too. Checkpoints from before it: not compared.
TRAIN_FEATURES = "train_features_sha256"
_STEP_DIR = re.compile(r"^step_(\d{6,})$")
_RAY_STEP_DIR = re.compile(r"^checkpoint_step_(\d{6,})$")
_MOVED_ASIDE = re.compile(r"^(?:checkpoint_)?step_\d{6,}\.old-\d+$")

# Settings that change parameter shapes or the checkpoint's file layout: a resume across them cannot load.
# Parameters an algorithm owns (Meta-SGD's rates) are caught by comparing parameter shapes instead.
SHAPE_KEYS = (
    "model.arch",
    "model.hidden_size",
    "model.num_layers",
    "model.num_heads",
    "model.intermediate_size",
    "model.max_seq_len",
    "model.adapters",
    "model.adapter_rank",
    "runtime.backend",
    "runtime.deepspeed",
    "runtime.zero_stage",
    "runtime.precision",  # DeepSpeed's fp16/bf16 optimizers save another state (fp32 -> bf16: KeyError)
    "train.freeze",  # the optimizer holds state only for the trained parameters
)
# Settings that say how this invocation runs, not what is trained: never reported as changed. The eval.*
# ones are read only by the test-time evaluation (the trainer's periodic validation never does), so a
# finished run evaluated again with other values (e.g. eval.adaptation=per_shot) is the same run.
_UNCOMPARED = (
    "logging.",
    "checkpoint.resume",
    "eval.adaptation",
    "eval.tune_users",
    "eval.n_boot",
    "eval.workers",
    "eval.fuse",
)


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TensorStateful(Stateful, Protocol):
    """A part whose state also holds tensors (early stopping's best weights): saved by rank 0 as
    ``<part name>.safetensors`` beside the client state; ``load_tensors`` gets None from a checkpoint
    written without them."""

    def tensors(self) -> dict[str, torch.Tensor]: ...

    def load_tensors(self, tensors: dict[str, torch.Tensor] | None) -> None: ...


# ------------------------------------------------------------------------------------------ files


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def checkpoint_step(name: str) -> int | None:
    """The meta-step of a checkpoint folder's name in either layout; None for any other name."""
    m = _STEP_DIR.match(name) or _RAY_STEP_DIR.match(name)
    return int(m[1]) if m else None


def ray_checkpoint_name(step: int) -> str:
    """The folder Ray Train stores a reported checkpoint under, next to its own files in the run folder."""
    return f"checkpoint_step_{step:06d}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see all or nothing. The file
    gets the permissions a plain write would give it (the umask's, or the replaced file's), not mkstemp's
    owner-only 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, _plain_mode(path))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plain_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would leave: the existing file's, else 0666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Files created inside are 0600 and folders 0700 (umask 077), whoever writes them (DeepSpeed, torch,
    Ray's copy to storage): a checkpoint holds the weights and the resolved config."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_rng(folder: Path, rank: int) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"cpu": torch.get_rng_state()}, str(folder / f"rng_rank{rank}.safetensors"))


def load_rng(folder: Path, rank: int) -> None:
    import torch
    from safetensors.torch import load_file

    path = folder / f"rng_rank{rank}.safetensors"
    if path.is_file():
        torch.set_rng_state(load_file(str(path))["cpu"])


def file_entries(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under ``folder`` (hidden temp files and the manifest excluded)."""
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    )
    return {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in files}


def write_manifest(folder: Path, step: int, world_size: int, files: dict[str, dict[str, Any]]) -> None:
    manifest = {"step": step, "world_size": world_size, "files": dict(sorted(files.items()))}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1))


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of ``folder`` if it is JSON of the shape :func:`write_manifest` writes (not yet checked
    against the files), or a ``UserError`` naming it."""
    mpath = Path(folder) / MANIFEST
    if not mpath.is_file():
        raise UserError(f"checkpoint {folder} is incomplete: no {MANIFEST} (was the save interrupted?)")
    damaged = f"{mpath} is damaged (not a metarec checkpoint manifest)"

    def bad(detail: str) -> UserError:
        return UserError(f"{damaged}: {detail}; {damaged_advice(Path(folder))}")

    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(str(exc)) from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(m, dict) and isinstance(m.get("size"), int) and isinstance(m.get("sha256"), str)
        for m in files.values()
    ):
        raise bad("expected a 'files' mapping of name -> size and sha256")
    for key in ("step", "world_size"):
        if not isinstance(manifest.get(key), int):
            raise bad(f"'{key}' is missing or not an integer")
    outside = [rel for rel in files if Path(rel).is_absolute() or ".." in Path(rel).parts]
    if outside:
        raise bad(f"{outside[0]!r} points outside the checkpoint")
    return manifest


def verify(folder: Path, hashes: bool = True) -> dict[str, Any]:
    """The manifest of a complete, intact checkpoint; ``UserError`` naming what is missing or damaged.
    ``hashes=False``: every file the manifest lists is there at its size, none read (milliseconds: the Ray
    driver's check before it starts the cluster; the workers check the hashes as they load)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for rel, meta in manifest["files"].items():
        p = folder / rel
        if not p.is_file():
            raise UserError(f"checkpoint {folder}: shard {rel} is missing; {damaged_advice(folder)}")
        if p.stat().st_size != meta["size"]:
            raise UserError(
                f"checkpoint {folder}: shard {rel} is truncated or changed "
                f"({p.stat().st_size} bytes, manifest says {meta['size']}); {damaged_advice(folder)}"
            )
        if hashes and sha256_file(p) != meta["sha256"]:
            raise UserError(
                f"checkpoint {folder}: shard {rel} fails its sha256 check; {damaged_advice(folder)}"
            )
    return manifest


def damaged_advice(folder: Path) -> str:
    """What to do about a damaged checkpoint: a run resumes (and a run folder exports) from its newest
    complete checkpoint, so naming the damaged one is not enough: say how to fall back to the one before
    (renamed, the damaged folder is no longer a checkpoint name, and nothing deletes it)."""
    folder = Path(folder)
    run_dir = run_dir_of(folder)
    ckpts = list_checkpoints(run_dir)
    if folder not in ckpts:  # a checkpoint copied out of its run: nothing to fall back to
        return "restore the file from a copy, or export another checkpoint"
    earlier = [p for p in ckpts[: ckpts.index(folder)] if (p / MANIFEST).is_file()]
    rename = f"rename it (e.g. to {folder.name}.damaged)"
    if not earlier:
        return (
            f"restore the file from a copy; it is the run's only complete checkpoint, so otherwise {rename} "
            "and start the run over under a new name (--set runtime.run_name=NEW)"
        )
    return f"restore the file from a copy, or {rename} to use the previous complete checkpoint {earlier[-1]}"


def run_dir_of(folder: Path) -> Path:
    """The run folder of a checkpoint folder in either layout (``checkpoints/step_N`` or
    ``checkpoint_step_N``)."""
    return folder.parent.parent if folder.parent.name == "checkpoints" else folder.parent


def read_client_state(folder: Path) -> dict[str, Any]:
    path = Path(folder) / CLIENT_STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        # Read before the manifest check by some callers (the progress bar's resumed step): say what to do.
        raise UserError(
            f"{path} cannot be read ({exc}): the checkpoint is damaged; {damaged_advice(Path(folder))}"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise UserError(
            f"{path} is not a metarec client state (no integer 'step'); {damaged_advice(Path(folder))}"
        )
    return state


def part_state(client: dict[str, Any], name: str) -> dict[str, Any]:
    """The saved state of the stateful part ``name`` (``Checkpointer``'s ``parts``) in a checkpoint's client
    state: its own entry; checkpoints written before the train state had one keep its fields at the top."""
    return client.get(name, client)


# ------------------------------------------------------------------------------------------ discovery


def list_checkpoints(run_dir: Path) -> list[Path]:
    """A run's checkpoint folders, oldest first, in either layout: ``checkpoints/step_NNNNNN`` (one-process
    runs) or ``checkpoint_step_NNNNNN`` next to Ray Train's own files (Ray runs)."""
    run_dir = Path(run_dir)
    found: list[tuple[int, Path]] = []
    for root, pattern in ((run_dir / "checkpoints", _STEP_DIR), (run_dir, _RAY_STEP_DIR)):
        if root.is_dir():
            found += [(int(m[1]), p) for p in root.iterdir() if (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def find_checkpoint(path: Path) -> Path:
    """``path`` itself, or, for a run folder, its newest complete checkpoint (``UserError`` if none)."""
    path = Path(path)
    if (path / MANIFEST).is_file() or not list_checkpoints(path):
        return path
    latest = latest_complete(path)
    if latest is None:
        raise UserError(
            f"run folder {path}: no complete checkpoint yet (none has a {MANIFEST}: a save still running or "
            "interrupted); wait for the run's next checkpoint, or give a checkpoint folder that has one"
        )
    return latest


def read_newest(path: Path, resolve: Callable[[Path], Path], read: Callable[[Path], T], tries: int = 3) -> T:
    """``read(resolve(path))`` while a run may be training in ``path``: it deletes its old checkpoints
    (``checkpoint.keep``; Ray Train's ``num_to_keep``), so the checkpoint chosen can go under the read,
    which then fails on a missing file. For a run folder whose newest complete checkpoint has changed
    since, that is no damage: read the new one. For a checkpoint named by the user whose manifest has gone
    (our prune removes it first), say it was deleted. Any other failure is reported as it is."""
    path = Path(path).expanduser()
    for attempt in range(1, tries + 1):
        folder = resolve(path)
        had_manifest = (folder / MANIFEST).is_file()
        try:
            return read(folder)
        except Exception:
            if not had_manifest:  # an export, an incomplete checkpoint: not one a run deletes
                raise
            if folder.resolve() != path.resolve() and attempt < tries and _newer_than(path, resolve, folder):
                log.warning("checkpoint %s was deleted while it was read; reading the newest one", folder)
                continue
            if (folder / MANIFEST).is_file():
                raise  # the checkpoint's own failure (damage, a mistake)
            raise UserError(
                f"checkpoint {folder} was deleted while it was read (a run training in its run folder "
                "deletes checkpoints beyond checkpoint.keep); read the run folder to get its newest "
                "checkpoint, or try again"
            ) from None
    raise AssertionError("unreachable: the last try returns or raises")


def _newer_than(path: Path, resolve: Callable[[Path], Path], folder: Path) -> bool:
    """Whether ``path`` (a run folder) now resolves to another checkpoint than ``folder``."""
    try:
        return resolve(path) != folder
    except Exception:  # no complete checkpoint left, ...: the first failure is the one to report
        return False


def latest_complete(run_dir: Path) -> Path | None:
    """The newest checkpoint that has a manifest (complete). Damage inside it is reported at load time."""
    complete = [p for p in list_checkpoints(run_dir) if (p / MANIFEST).is_file()]
    return complete[-1] if complete else None


def resume_point(run_dir: Path, resume: bool = True) -> Path | None:
    """The checkpoint a run in ``run_dir`` starts from: None for a fresh run folder, else its newest
    complete checkpoint, with every newer incomplete one named in a warning. Checkpoint folders of which
    none is complete, or ``resume=False`` with checkpoints present, are errors: both would otherwise train
    from step 0 over them."""
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        return None
    names = ", ".join(p.name for p in ckpts)
    start_over = f"to start over, use a new run name (--set runtime.run_name=NEW) or move {run_dir} away"
    if not resume:
        raise UserError(
            f"checkpoint.resume=false, but run folder {run_dir} already has checkpoints ({names}); "
            f"they are never overwritten: {start_over}"
        )
    complete = [p for p in ckpts if (p / MANIFEST).is_file()]
    if not complete:
        raise UserError(
            f"run folder {run_dir} has checkpoints but none is complete (no {MANIFEST} in {names}); "
            f"refusing to train from step 0 over them: {start_over}"
        )
    newer = ckpts[ckpts.index(complete[-1]) + 1 :]
    if newer:
        log.warning(
            "skipping incomplete checkpoint(s) %s (no %s: a save was interrupted); resuming from %s",
            ", ".join(str(p) for p in newer),
            MANIFEST,
            complete[-1],
        )
    return complete[-1]


def move_aside(folder: Path) -> Path | None:
    """Never write over an existing step folder: rename it to ``<name>.old-<k>`` (ignored by discovery and
    never pruned) and say so."""
    folder = Path(folder)
    if not folder.exists():
        return None
    for k in itertools.count(1):
        dest = folder.with_name(f"{folder.name}.old-{k}")
        if not dest.exists():
            break
    try:
        os.rename(folder, dest)
    except OSError as exc:
        raise CheckpointWriteError(
            f"checkpoint folder {folder} exists and cannot be moved aside: {exc}"
        ) from exc
    log.warning("checkpoint folder %s already existed; moved it to %s and saving anew", folder, dest)
    return dest


def prune(run_dir: Path, keep: int, protect: Iterable[Path] = ()) -> None:
    """Delete all but the newest ``keep`` complete checkpoints, and incomplete ones older than those,
    moved-aside ones (``<name>.old-<k>``: an interrupted save, one per kill) included. The manifest goes
    first, so a folder that cannot be removed whole is left incomplete, never half-complete. A moved-aside
    folder that is complete is never deleted, nor any folder in ``protect`` (the checkpoint a run resumed
    from, those Ray Train tracks and deletes itself)."""
    ckpts = list_checkpoints(run_dir)
    complete = [p for p in ckpts if (p / MANIFEST).is_file()]
    if not complete:  # nothing to keep: nothing is deleted either
        return
    keep_set = set(complete[-max(keep, 1) :])
    newest_kept = min(keep_set, key=lambda p: p.name)
    kept = {Path(p).resolve() for p in protect}
    for p in ckpts:
        if p not in keep_set and p.name < newest_kept.name and p.resolve() not in kept:
            _delete_checkpoint(p)
    kept_from = checkpoint_step(newest_kept.name) or 0
    for p in _moved_aside(run_dir):
        step = checkpoint_step(p.name.split(".old-")[0]) or 0
        if step < kept_from and not (p / MANIFEST).exists() and p.resolve() not in kept:
            _delete_checkpoint(p)


# Ray Train's record of the checkpoints it registered (and deletes beyond num_to_keep), in the run folder.
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"


def ray_tracked_checkpoints(run_dir: Path) -> set[Path] | None:
    """The checkpoint folders Ray Train's snapshot in ``run_dir`` names (any string in it whose last part is
    a checkpoint name: no reliance on its layout); an empty set without a snapshot; None when it cannot be
    read (Ray may be rewriting it): then nothing may be pruned that Ray might delete too."""
    path = Path(run_dir) / RAY_SNAPSHOT
    if not path.exists():
        return set()
    try:
        snapshot = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.info("%s cannot be read now (%s); checkpoints are pruned after a later save", path, exc)
        return None
    names = {PurePosixPath(s).name for s in _strings_in(snapshot)}
    return {Path(run_dir) / n for n in names if checkpoint_step(n) is not None}


def _strings_in(tree: Any) -> Iterator[str]:
    if isinstance(tree, str):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _strings_in(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _strings_in(value)


def _moved_aside(run_dir: Path) -> list[Path]:
    """The folders :func:`move_aside` renamed, in either layout."""
    found = []
    for root in (Path(run_dir) / "checkpoints", Path(run_dir)):
        if root.is_dir():
            found += [p for p in root.iterdir() if _MOVED_ASIDE.match(p.name) and p.is_dir()]
    return found


def _delete_checkpoint(p: Path) -> None:
    try:
        (p / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(p)
    except OSError as exc:
        log.warning("could not delete old checkpoint %s (%s); left in place", p, exc)


# ------------------------------------------------------------------------------------------ config on resume


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` for every setting that differs (how-to-run settings left out). A
    setting ``old`` lacks (one added since it was saved) counts at its default, which it had then."""
    from metarec_dist.config import Config

    a, b, default = _flat(old), _flat(new), _flat(Config().to_dict())
    keys = sorted(k for k in a.keys() | b.keys() if not k.startswith(_UNCOMPARED))
    was = {k: a[k] if k in a else default.get(k) for k in keys}
    return {k: (was[k], b.get(k)) for k in keys if was[k] != b.get(k)}


def check_resume_config(
    folder: Path,
    client: dict[str, Any],
    cfg: Config,
    num_items: int,
    item_raw_ids: list[str] | None = None,
    train_data: str | None = None,
    train_features: str | None = None,
    say: str = "all",
) -> None:
    """A resumed run must build the same shapes as the checkpoint, and train on the same data: such changes
    are one error naming them; other changes (learning rate, algorithm, steps, ...) are a warning listing
    old -> new, and take effect from the resumed step (the engines put this run's ``optim.*`` over the
    restored optimizer state). ``item_raw_ids`` and ``train_data`` (:data:`TRAIN_DATA`'s digest) are this
    run's data, compared with what the checkpoint recorded when it has them; so is ``train_features``
    (:data:`TRAIN_FEATURES`). Settings with a derived default (``model.intermediate_size: null``) are
    compared on the value they resolve to.

    Without the digests where the checkpoint records them (the Ray driver, which reads no training rows),
    the data is compared later, by the workers: ``data.*`` changes are then only noted at INFO here (not a
    warning that the workers' refusal would contradict), and a Ray worker's ``say="data"`` warns of only
    those (rank 0, once the data is found the same; the driver said the rest) and ``say="none"`` of nothing
    (the other ranks: one warning, not one per rank)."""
    from metarec_dist.config import resolve_loss
    from metarec_dist.metrics.redact import redact

    cfg = resolve_loss(cfg, num_items)  # the checkpoint records the loss auto resolved to
    check_same_start(folder, client.get("config") or {}, cfg)
    changes = config_changes(
        resolved_config(client.get("config") or {}), resolved_config(redact(cfg.to_dict()))
    )
    changes.pop("train.init_from", None)  # the same source (check_same_start), spelt otherwise (relative)
    fatal = {k: v for k, v in changes.items() if k in SHAPE_KEYS}
    data = data_differences(client, num_items, item_raw_ids, train_data, train_features)
    if fatal or data:
        raise UserError(_refusal(folder, fatal, data, changes))
    said_here = {k: v for k, v in changes.items() if _said_here(k, say, client, train_data, train_features)}
    if say == "all" and (later := {k: v for k, v in changes.items() if k not in said_here}):
        # The driver (INFO: quiet unless --verbose): rank 0 warns once the data is found the same.
        log.info(
            "resuming from %s: data settings changed (%s); the workers compare the training data with the "
            "checkpoint's before they resume",
            folder,
            "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(later.items())),
        )
    changes = said_here
    expected = {k: v for k, v in changes.items() if _expected_change(k, *v)}
    for said, level in (
        (expected, logging.INFO),
        ({k: changes[k] for k in changes.keys() - expected}, logging.WARNING),
    ):
        if said:
            log.log(
                level,
                "resuming from %s with changed settings: %s",
                folder,
                "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(said.items())),
            )


def start_source(train: dict[str, Any]) -> tuple[str, str] | None:
    """Where a run of these ``train`` settings (a ``Config.to_dict()["train"]``) took its first weights
    from: ``("train.init_from", absolute path, seed filled in)``, ``("train.pretrain", its config file)``,
    or None (from scratch). A relative path (recorded before ``metarec train`` made it absolute) is taken
    from the current folder, as it was then."""
    if train.get("pretrain"):
        return "train.pretrain", str(train["pretrain"])
    given = train.get("init_from")
    if not given:
        return None
    path = str(given).replace("{seed}", str(train.get("seed")))
    return "train.init_from", os.path.abspath(os.path.expanduser(path))


def check_same_start(folder: Path, saved: dict[str, Any], cfg: Config) -> None:
    """A resume loads the run's own checkpoint, never a ``train.init_from`` source or a ``train.pretrain``
    first stage: a re-run under the same run name that names another source than the run started from
    (or one where it had none, or none where it had one) would silently go on from the old one. One line
    naming the key, both sources and what to do. Two ``train.pretrain`` files are the same source here:
    the first stage's settings are compared by ``train.pretrain.run_pretrain``, not its file's path."""
    import dataclasses

    train = saved.get("train")
    if not isinstance(train, dict):
        return  # no config recorded: nothing to compare
    was, now = start_source(train), start_source(dataclasses.asdict(cfg.train))
    if was == now or (was and now and was[0] == now[0] == "train.pretrain"):
        return
    keys = {s[0] for s in (was, now) if s is not None}
    key = "train.init_from" if "train.init_from" in keys else "train.pretrain"
    recorded, given = (f"{s[0]} {s[1]}" if s else "no source (from scratch)" for s in (was, now))
    raise UserError(
        f"{key}: the run in {run_dir_of(Path(folder))} started from {recorded}, this one gives {given}; a "
        "resume goes on from the run's own checkpoint and would ignore that: start a new run (--set "
        "runtime.run_name=NEW), or give the recorded source again to resume"
    )


def _said_here(
    key: str, say: str, client: dict[str, Any], train_data: str | None, features: str | None
) -> bool:
    """Whether this check says a changed setting (see :func:`check_resume_config`'s ``say``)."""
    compared_later = client.get(TRAIN_DATA) is not None or client.get(TRAIN_FEATURES) is not None
    data_key = key.startswith("data.")
    if say == "none":
        return False
    if say == "data":  # a Ray worker: what the driver held back
        return data_key and compared_later
    if train_data is None and features is None and compared_later:  # the driver: the workers compare the data
        return not data_key
    return True


# Changes a resume expects, said at INFO, not warned about: raising train.meta_steps is how a run is trained
# longer; how often it logs and saves and how many checkpoints it keeps do not change what is trained.
_EXPECTED = ("checkpoint.keep", "checkpoint.every", "train.log_every")


def _expected_change(key: str, old: Any, new: Any) -> bool:
    if key == "train.meta_steps":
        return isinstance(old, int) and isinstance(new, int) and new > old
    return key in _EXPECTED


def resolved_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a ``Config.to_dict()``) with derived defaults made concrete, so that leaving a setting to
    its default and writing the value it derives are the same model: ``model.intermediate_size: null`` is
    4 x ``model.hidden_size`` (``ModelConfig.ffn_size``, the rule the backbone builds with)."""
    model = config.get("model")
    if not isinstance(model, dict) or model.get("intermediate_size") is not None:
        return config
    hidden = model.get("hidden_size")
    if not isinstance(hidden, int) or isinstance(hidden, bool):
        return config
    return {**config, "model": {**model, "intermediate_size": 4 * hidden}}


def data_differences(
    client: dict[str, Any],
    num_items: int,
    item_raw_ids: list[str] | None,
    train_data: str | None,
    train_features: str | None = None,
) -> list[str]:
    """What of this run's prepared data differs from the checkpoint's: the item catalogue (its size; or
    other items or order: every item id would name another item) and the training users' sequences
    (another file, split, seed or filter). Unknown on either side (an older checkpoint): not compared."""
    found = []
    saved_items = client.get("item_raw_ids")
    if "num_items" in client and int(client["num_items"]) != num_items:
        found.append(f"the item catalogue (num_items {client['num_items']} -> {num_items})")
    elif item_raw_ids is not None and saved_items is not None and list(saved_items) != list(item_raw_ids):
        pairs = zip(saved_items, item_raw_ids, strict=False)  # lengths differ: the first gap is named
        i = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(saved_items), len(item_raw_ids)))
        was, now = (ids[i] if i < len(ids) else None for ids in (saved_items, item_raw_ids))
        at = f"item {i + 1} was {was!r}, now {now!r}"
        found.append(f"the item catalogue ({at})")
    saved_train = client.get(TRAIN_DATA)
    if train_data is not None and saved_train is not None and saved_train != train_data:
        found.append("the training users or their interactions")
    saved_features = client.get(TRAIN_FEATURES)
    if train_features is not None and saved_features is not None and saved_features != train_features:
        found.append("the user or item side tables (data.user_features / data.item_features files)")
    return found


def _refusal(
    folder: Path, fatal: dict[str, tuple[Any, Any]], data: list[str], changes: dict[str, tuple[Any, Any]]
) -> str:
    """The one-line refusal of a resume: the shape settings, then the data, that differ; what to do."""
    why = []
    if fatal:
        text = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in fatal.items())
        why.append(f"these settings change the model's shape or the checkpoint layout: {text}")
    if data:
        keys = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items() if k.startswith("data."))
        why.append(
            f"its training data differs: {' and '.join(data)} "
            f"({f'changed settings: {keys}' if keys else 'no data setting changed: the data files did'})"
        )
    run_dir = run_dir_of(Path(folder))
    start = "start a new run (--set runtime.run_name=NEW)"
    # Continuing on the new data, or under another engine layout (train.init_from reads any), is a new run
    # that starts from these weights.
    if data or any(k.startswith("runtime.") for k in fatal):
        start += f", with --set train.init_from={run_dir} to start from these weights"
    back = "the checkpoint's values and data" if data else "the checkpoint's values"
    return f"cannot resume from {folder}: {'. And '.join(why)}. Resume with {back}, or {start}"


def check_param_shapes(folder: Path, saved: dict[str, list[int]] | None, now: dict[str, list[int]]) -> None:
    """Parameters the checkpoint has and this model does not (or of another shape): an error naming them,
    whatever setting caused it (an algorithm that owns parameters, a data catalogue of another size)."""
    if saved is None:  # written before shapes were recorded
        return
    diff = [
        f"{n}: {saved.get(n)} -> {now.get(n)}"
        for n in sorted(saved.keys() | now.keys())
        if saved.get(n) != now.get(n)
    ]
    if diff:
        raise UserError(
            f"cannot resume from {folder}: its parameters differ from this run's model "
            f"({'; '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}); resume with the checkpoint's "
            "settings or start a new run (--set runtime.run_name=NEW)"
        )


def param_shapes(module: Any) -> dict[str, list[int]]:
    # ZeRO-3 empties partitioned parameters and keeps their full shape in ``ds_shape``.
    return {n: list(getattr(p, "ds_shape", p.shape)) for n, p in module.named_parameters()}


# ------------------------------------------------------------------------------------------ save and load


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (disk full, read-only folder...): the run stops, nothing complete
    was touched."""


@private_files()  # 0600 files, whoever writes them
def save_checkpoint(
    engine: TrainEngine,
    folder: Path,
    client_state: dict[str, Any],
    ctx: WorkerContext,
    tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> None:
    """Every rank calls this (DeepSpeed's save is a collective). ``folder`` may be shared by the ranks or
    be each rank's own staging folder (Ray merges those into one checkpoint): each rank lists what it wrote,
    the lists are gathered, and rank 0 writes the manifest last, so it only ever names finished files.
    ``tensors``: rank 0 writes each non-empty entry as ``<name>.safetensors``."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    folder = Path(folder)
    # One process writing a folder it creates here may remove it if the save fails (never one it found).
    own = ctx.world_size == 1 and not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        engine.save_checkpoint(str(folder / "engine"), tag="state")
        save_rng(folder, ctx.rank)
        if ctx.rank == 0:
            atomic_write_text(folder / CLIENT_STATE, json.dumps(client_state, indent=1))
            for name, state in (tensors or {}).items():
                if state:
                    save_file(state, str(folder / f"{name}.safetensors"))
    # torch's zip writer reports a failed write as a RuntimeError, safetensors as its own error type
    except (OSError, RuntimeError, SafetensorError) as exc:
        left = _drop_partial(folder) if own else "The checkpoint stays incomplete and is never resumed from"
        raise CheckpointWriteError(
            f"could not write checkpoint {folder}: {exc} (full disk, read-only or removed folder?). "
            f"{left}; earlier checkpoints are untouched"
        ) from exc
    ctx.barrier()
    merged: dict[str, dict[str, Any]] = {}
    for entries in ctx.all_gather(file_entries(folder)):
        merged.update(entries)
    if ctx.rank == 0:
        try:
            write_manifest(folder, int(client_state["step"]), ctx.world_size, merged)
        except OSError as exc:
            raise CheckpointWriteError(f"could not write {folder / MANIFEST}: {exc}") from exc
    ctx.barrier()


def _drop_partial(folder: Path) -> str:
    """Remove the partial checkpoint a failed save left (a full disk stays full with it, and a re-run would
    only move it aside and keep it); what became of it, for the error."""
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():
        return "Its partial files could not all be removed; it is incomplete and never resumed from"
    return "Its partial files were removed"


def _load_tensors(path: Path) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    return load_file(str(path)) if path.is_file() else None


def open_checkpoint(folder: Path, world_size: int | None = None) -> dict[str, Any]:
    """The client state of a complete, intact checkpoint (every file checked against the manifest).
    ``world_size``: this run's, checked against the writer's (ZeRO shards are tied to it)."""
    manifest = verify(folder)
    if world_size is not None and manifest["world_size"] != world_size:
        raise UserError(other_world_size(folder, manifest["world_size"], world_size))
    return read_client_state(folder)


def other_world_size(folder: Path, written_by: int, num_workers: int) -> str:
    """The refusal of a resume with another number of workers than wrote the checkpoint, and the way out:
    ``train.init_from`` reads any engine layout (it loads weights only, into a new run)."""
    run_dir = run_dir_of(Path(folder))
    return (
        f"cannot resume from {folder}: it was written by {written_by} workers and runtime.num_workers is "
        f"{num_workers}; its ZeRO shards and each worker's task stream are tied to the number of workers "
        "(DeepSpeed universal checkpoints are not supported): resume with "
        f"--set runtime.num_workers={written_by}, or start a new run from its weights with any number of "
        f"workers (--set runtime.run_name=NEW --set train.init_from={run_dir})"
    )


def load_checkpoint(
    engine: TrainEngine, folder: Path, rank: int, world_size: int | None = None
) -> dict[str, Any]:
    """Verify ``folder``, load the engine's shards and this rank's RNG; return the client state."""
    folder = Path(folder)
    client = open_checkpoint(folder, world_size)
    engine.load_checkpoint(str(folder / "engine"), tag="state")
    load_rng(folder, rank)
    return client


class Checkpointer:
    """Saves and restores a run's stateful parts, as torchtitan's ``CheckpointManager`` does: the engine
    (which writes its own shards), and every part with ``state_dict()``/``load_state_dict()`` (task
    sampler, train state), together with the run's fixed facts (``info``: config, catalogue size, ...).
    ``rank_parts`` differ per rank (each rank's task sampler over its own shard): every rank's state is
    gathered into the client state as ``ranks[r]``, and each rank restores its own.
    It decides when to save (``should_save``), where (the worker context), and what is safe to resume."""

    def __init__(
        self,
        ctx: WorkerContext,
        cfg: CheckpointConfig,
        engine: TrainEngine,
        parts: dict[str, Stateful],
        info: dict[str, Any],
        run_cfg: Config,
        rank_parts: dict[str, Stateful] | None = None,
    ) -> None:
        self.ctx, self.cfg, self.engine = ctx, cfg, engine
        self.parts, self.info, self.run_cfg = parts, info, run_cfg
        self.rank_parts = rank_parts or {}
        self.total_steps = run_cfg.train.meta_steps
        self.loaded: tuple[int, Path] | None = None  # (step, folder) this run resumed from

    @property
    def enabled(self) -> bool:
        return self.ctx.has_checkpoint_storage

    def should_save(self, step: int) -> bool:
        """A periodic checkpoint (the final one is saved by ``save`` at the end of ``fit``)."""
        return self.enabled and self.cfg.every > 0 and step % self.cfg.every == 0 and step < self.total_steps

    def save(self, step: int, metrics: dict[str, Any]) -> Path | None:
        """Save a complete checkpoint of ``step`` (every rank) and report it with ``metrics``; without
        storage, only report. Re-running a finished run saves nothing over the checkpoint it resumed."""
        if not self.enabled:
            self.ctx.report(metrics)
            return None
        if self.loaded is not None and self.loaded[0] == step:
            self.ctx.report(metrics)
            return self.loaded[1]
        final = self.ctx.saved_checkpoint_path(step)
        if final is not None and self.ctx.is_main:
            move_aside(final)
        folder = self.ctx.checkpoint_folder(step)
        client = {
            "step": step,
            **{name: part.state_dict() for name, part in self.parts.items()},
            **self.info,
            "param_shapes": param_shapes(self.engine.module),
        }
        # The data folder a data.name set was found in, as the run folder records it: with the checkpoint,
        # a copy of it (or its export) made elsewhere still says where its data was.
        if DATA_DIR not in client and self.ctx.run_dir is not None:
            data_dir = recorded_data_folder(self.ctx.run_dir, DATA_DIR)
            if data_dir is not None:
                client[DATA_DIR] = str(data_dir)
        if self.rank_parts:  # a collective: every rank saves (trap 1)
            client["ranks"] = self.ctx.all_gather({n: p.state_dict() for n, p in self.rank_parts.items()})
        tensors = {n: p.tensors() for n, p in self.parts.items() if hasattr(p, "tensors")}
        save_checkpoint(self.engine, folder, client, self.ctx, tensors)
        self.ctx.report(metrics, folder)
        return final or folder

    def load(self) -> int | None:
        """Resume from the run's checkpoint, if it has one: the meta-step resumed at, else None."""
        if not self.enabled:
            return None
        with self.ctx.resume_dir(self.cfg.resume) as folder:
            if folder is None:
                return None
            folder = Path(folder)
            client = open_checkpoint(folder, self.ctx.world_size)
            # Shapes and settings before any shard is read: a mismatch is named, not a size-mismatch trace.
            check_resume_config(
                folder,
                client,
                self.run_cfg,
                int(self.info.get("num_items", 0)),
                self.info.get("item_raw_ids"),
                self.info.get(TRAIN_DATA),
                self.info.get(TRAIN_FEATURES),
                # A Ray worker: the driver said the changed settings before the start (ray_worker.py).
                getattr(self.ctx, "resume_changes_to_say", "all"),
            )
            check_param_shapes(folder, client.get("param_shapes"), param_shapes(self.engine.module))
            self.engine.load_checkpoint(str(folder / "engine"), tag="state")
            load_rng(folder, self.ctx.rank)
        for name, part in self.parts.items():
            part.load_state_dict(part_state(client, name))
            if hasattr(part, "load_tensors"):
                part.load_tensors(_load_tensors(folder / f"{name}.safetensors"))
        self._load_rank_parts(folder, client)
        step = int(client["step"])
        self.loaded = (step, folder)
        log.info("resumed from %s at meta-step %d", folder, step)
        self.ctx.prune_checkpoints(folder)  # a lowered checkpoint.keep frees disk before the next save
        return step

    def _load_rank_parts(self, folder: Path, client: dict[str, Any]) -> None:
        if not self.rank_parts:
            return
        ranks = client.get("ranks")
        if ranks is None:
            # Written before each rank had its own task stream: every rank continues from the one saved
            # stream state (deterministic, but not the stream the old run would have continued with).
            log.warning(
                "%s has no per-rank task-stream state; the ranks continue from the shared one", folder
            )
            ranks = [client] * self.ctx.world_size
        if not isinstance(ranks, list) or len(ranks) != self.ctx.world_size:
            raise UserError(f"{folder / CLIENT_STATE}: 'ranks' does not hold one state per rank")
        for name, part in self.rank_parts.items():
            part.load_state_dict(ranks[self.ctx.rank][name])


# ------------------------------------------------------------------------------------------ export

# What an export keeps of a checkpoint's client state: enough to score and to speak the user's item ids.
# TRAIN_DATA, TRAIN_FEATURES: an evaluation can check the data it prepares is the data the model was trained
# on. An export also records DATA_FOLDER and DATA_DIR (``checkpoint_data_folder``).
# The adaptation a run's searched validation chose per support size (train.eval_adaptation: searched): a
# part of its checkpoints (train/trainer.py), kept by its exports; recommend and serve apply it.
VALIDATED_ADAPTATION = "validated_adaptation"
EXPORT_META = (
    VALIDATED_ADAPTATION,
    "config",
    "num_items",
    "step",
    "item_titles",
    "item_raw_ids",
    "features",
    TRAIN_DATA,
    TRAIN_FEATURES,
)
EXPORT_CONFIG = "metarec_config.json"
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_ALGORITHM = "algorithm.safetensors"  # parameters the algorithm owns (Meta-SGD's rates), if any
# The training users' co-occurrence counts of an export fused with them (``metarec export --fuse``;
# eval/fusion.py), with ``fusion`` in its config file.
EXPORT_COOC = "cooccurrence.safetensors"
# The files an export holds: a folder with the required ones, maybe the optional ones, and nothing else is
# a previous export, the only kind of non-empty folder `export` replaces (with overwrite=True); nothing else
# is ever deleted.
EXPORT_FILES = frozenset({EXPORT_CONFIG, EXPORT_WEIGHTS})
EXPORT_OPTIONAL = frozenset({EXPORT_ALGORITHM, EXPORT_COOC})


def export(
    checkpoint_dir: Path,
    out_dir: Path,
    overwrite: bool = False,
    finish: Callable[[Path], None] | None = None,
) -> Path:
    """Consolidate a (sharded) checkpoint into ``model.safetensors`` + ``metarec_config.json`` that load and
    score with :func:`load_exported`: no DeepSpeed, no Ray. Written to a temp folder beside ``out_dir``, then
    renamed. ``out_dir`` must be new, empty, or (with ``overwrite``) a previous export; it may not be the
    checkpoint, a folder above it or inside it. ``finish``: called with the complete temp export before it
    takes ``out_dir``'s place, to add optional files computed from it (the fusion's counts): a failure
    there leaves ``out_dir`` as it was."""
    from safetensors.torch import save_file

    from metarec_dist.runtime.export import consolidated_state_dict

    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    _check_export_target(checkpoint_dir, out_dir, overwrite)  # before the (slow) consolidation
    verify(checkpoint_dir)
    client = json.loads((checkpoint_dir / CLIENT_STATE).read_text())
    state = consolidated_state_dict(checkpoint_dir / "engine")
    weights, algorithm = (
        {k.removeprefix(p): v.contiguous() for k, v in state.items() if k.startswith(p)}
        for p in ("model.", "algorithm.")
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_export_temps(out_dir)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=_export_temp_prefix(out_dir, "tmp")))
    try:
        save_file(weights, str(tmp / EXPORT_WEIGHTS))
        if algorithm:
            save_file(algorithm, str(tmp / EXPORT_ALGORITHM))
        meta = {k: client[k] for k in EXPORT_META if k in client}
        for key in (DATA_FOLDER, DATA_DIR):
            if (data_folder := checkpoint_data_folder(checkpoint_dir, client, key)) is not None:
                meta[key] = data_folder
        (tmp / EXPORT_CONFIG).write_text(json.dumps(meta, indent=1))
        if finish is not None:
            finish(tmp)
        _follow_umask(tmp)
        _check_export_target(checkpoint_dir, out_dir, overwrite)  # again: it may have changed meanwhile
        _replace_export(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temp folder, nothing else
        raise
    remove_stale_export_temps(out_dir)  # a moved-aside previous export is stale only once out_dir is whole
    return out_dir


def checkpoint_data_folder(folder: Path, client: dict[str, Any], key: str = DATA_FOLDER) -> str | None:
    """Where the training of checkpoint ``folder`` (``client``: its client state) read its relative data
    files (``key`` DATA_FOLDER), or found its ``data.name`` set (DATA_DIR): its own record, else (a checkpoint
    from before it carried one) its run folder's; None where neither says (such a checkpoint copied out of
    its run folder)."""
    own = client.get(key)
    if isinstance(own, str) and Path(own).is_absolute():
        return own
    recorded = recorded_data_folder(run_dir_of(Path(folder)), key)
    return None if recorded is None else str(recorded)


# An export's temp folders beside --out: ``.<out name>.<kind>-<host>-<pid>-<random>`` (kind ``tmp``: the
# export being written, ``old``: the previous export moved aside while the new one takes its place). A
# killed export leaves them; the next export to the same --out removes those whose process is gone.
_EXPORT_TEMP = re.compile(r"^(?P<kind>tmp|old)-(?P<host>.+)-(?P<pid>\d+)-[^-]+$")


def _export_temp_prefix(out_dir: Path, kind: str) -> str:
    return f".{out_dir.name}.{kind}-{socket.gethostname()}-{os.getpid()}-"


def stale_export_temps(out_dir: Path) -> list[tuple[str, Path]]:
    """(kind, folder) of the temp folders an export to ``out_dir`` made and left: our naming, a real folder
    (no link), made on this machine by a process that is gone. Nothing else beside ``out_dir`` is named."""
    prefix, host = f".{out_dir.name}.", socket.gethostname()
    found = []
    for path in out_dir.parent.iterdir():
        m = _EXPORT_TEMP.match(path.name[len(prefix) :]) if path.name.startswith(prefix) else None
        if m is None or m["host"] != host or not path.is_dir() or path.is_symlink():
            continue
        if int(m["pid"]) != os.getpid() and not process_alive(int(m["pid"])):
            found.append((m["kind"], path))
    return found


def remove_stale_export_temps(out_dir: Path) -> None:
    """Remove what a killed export to ``out_dir`` left beside it: its half-written temp folders, and a
    previous export it had moved aside, once ``out_dir`` holds a whole export (until then that may be the
    only one). A moved-aside folder loses only an export's own files; anything else in it keeps it."""
    whole = out_dir.is_dir() and not out_dir.is_symlink() and _is_export(out_dir)
    for kind, path in stale_export_temps(out_dir):
        if kind == "old" and not whole:
            continue
        try:
            if kind == "tmp":
                shutil.rmtree(path)
            else:
                _remove_moved_aside_export(path)
        except OSError as exc:
            log.warning("could not remove %s, left by an export that was killed: %s", path, exc)
            continue
        log.info("removed %s, left beside %s by an export that was killed", path, out_dir)


def _remove_moved_aside_export(old: Path) -> None:
    for name in EXPORT_FILES | EXPORT_OPTIONAL:
        (old / name).unlink(missing_ok=True)
    old.rmdir()


def export_source(path: Path) -> Path:
    """The checkpoint ``metarec export --checkpoint path`` reads: ``path`` if it is a checkpoint folder
    (complete or not: ``verify`` says what is missing), else a run folder's newest complete checkpoint;
    ``UserError`` saying what ``path`` is instead (missing, a file, an export, some other folder)."""
    path = Path(path).expanduser()
    what = "give a run folder or one of its checkpoint folders"
    if not path.is_dir():
        raise UserError(f"--checkpoint {path}: {'is a file' if path.exists() else 'no such folder'}; {what}")
    if (path / EXPORT_CONFIG).is_file():
        raise UserError(
            f"--checkpoint {path}: is already an exported model (copy the folder to move it); {what}"
        )
    found = find_checkpoint(path)
    checkpoint_like = _STEP_DIR.match(path.name) or _RAY_STEP_DIR.match(path.name)
    if found == path and not checkpoint_like and not (path / MANIFEST).exists():
        raise UserError(
            f"--checkpoint {path}: neither a checkpoint (no {MANIFEST}) nor a run folder (no "
            f"checkpoints/step_*); {what}"
        )
    return found


def _follow_umask(folder: Path) -> None:
    """An export is made to be shared (served, copied to another machine): its folder and files get the
    permissions any new file of this user gets (the umask), not the 0700 / 0600 of the temp folder and of
    safetensors' writes. Checkpoints stay private (``private_files``)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _is_export(folder: Path) -> bool:
    names = {p.name for p in folder.iterdir()}
    return EXPORT_FILES <= names <= EXPORT_FILES | EXPORT_OPTIONAL and all(
        (folder / n).is_file() and not (folder / n).is_symlink() for n in names
    )


def _check_export_target(checkpoint_dir: Path, out_dir: Path, overwrite: bool) -> None:
    src, out = checkpoint_dir.resolve(), out_dir.resolve()
    if out == Path.cwd().resolve():  # "" and "." too: the export takes the folder's place, under the shell
        raise UserError(f"export --out {out_dir}: is the current folder; give a new folder name")
    if out == src or out in src.parents or src in out.parents:
        raise UserError(
            f"export --out {out_dir}: overlaps the checkpoint being exported ({checkpoint_dir}); "
            "choose a folder outside it"
        )
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"export --out {out_dir}: {parent} is a file, not a folder")
    # The export is written beside --out and renamed: its folder must be writable (checked before the slow
    # consolidation; otherwise the error names a temp folder, after it).
    check_output_folder(out.parent, f"export --out {out_dir}: folder")
    if out_dir.is_symlink():  # replaced, it would be the link that goes, not the folder it names
        raise UserError(f"export --out {out_dir}: is a symbolic link; give the folder it points to")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UserError(f"export --out {out_dir}: is a file, not a folder; choose a new folder name")
    if not any(out_dir.iterdir()):
        return
    if not _is_export(out_dir):
        raise UserError(
            f"export --out {out_dir}: the folder is not empty and is not a previous export "
            f"(it would hold only {sorted(EXPORT_FILES | EXPORT_OPTIONAL)}); choose a new or empty folder"
        )
    if not overwrite:
        raise UserError(f"export --out {out_dir}: holds a previous export; pass --overwrite to replace it")


def _replace_export(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; a previous export there (checked) is moved aside first and its own
    files removed after, so a crash in between leaves one of the two exports whole."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    if not any(out_dir.iterdir()):
        out_dir.rmdir()
        os.replace(tmp, out_dir)
        return
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=_export_temp_prefix(out_dir, "old")))
    old.rmdir()
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    _remove_moved_aside_export(old)


class Exported(NamedTuple):
    model: SeqRecommender  # in eval mode
    cfg: Config
    meta: dict[str, Any]  # num_items, step, item_titles, item_raw_ids, features, config
    algorithm_state: dict[str, torch.Tensor]  # the algorithm's own parameters ({} for most algorithms)


def load_exported(folder: Path) -> Exported:
    """The model, its config and metadata, and the trained algorithm's parameters, from an exported
    folder."""
    from metarec_dist.meta import build_algorithm
    from metarec_dist.models.recommender import SeqRecommender

    folder = Path(folder)
    for name in (EXPORT_WEIGHTS, EXPORT_CONFIG):
        if not (folder / name).is_file():
            raise UserError(
                f"{folder} is not an exported model: {name} is missing (run `metarec export` first)"
            )
    meta, cfg, num_items, layout = _read_export_config(folder)
    if cfg.data.name is not None and DATA_DIR in meta:  # the data readers imported only then
        from metarec_dist.data.layout import with_recorded_data_dir

        # A data.name set: read from the data folder training found it in (evaluate, export --fuse, ...).
        data = with_recorded_data_dir(cfg.data, meta[DATA_DIR])
        cfg = dataclasses.replace(cfg, data=data) if data is not cfg.data else cfg
    # Built empty; load_state_dict fills the per-item feature buffers with the trained ones.
    model = SeqRecommender(cfg.model, num_items, layout=layout)
    algorithm = build_algorithm(cfg.meta, model)
    _load_export_weights(folder, model, algorithm, cfg.meta.algorithm)
    return Exported(model.eval(), cfg, meta, dict(algorithm.state_dict()))


def _read_export_config(folder: Path) -> tuple[dict[str, Any], Config, int, FeatureLayout | None]:
    """The export's metadata (``EXPORT_CONFIG``), the run's config, the catalogue size and the side
    information's vocabularies; a damaged file is a one-line error."""
    from metarec_dist.config import Config, from_dict
    from metarec_dist.models.features import FeatureLayout

    try:
        meta = json.loads((folder / EXPORT_CONFIG).read_text(encoding="utf-8"))
        cfg = from_dict(Config, meta["config"])
        num_items = int(meta["num_items"])
        layout = FeatureLayout.from_dict(meta.get("features"))  # the side information's vocabularies
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
        raise UserError(f"{folder / EXPORT_CONFIG} is damaged or not a metarec export: {exc!r}") from None
    return meta, cfg, num_items, layout


def _load_export_weights(
    folder: Path, model: SeqRecommender, algorithm: nn.Module, algorithm_name: str
) -> None:
    """The model's weights, then the algorithm's own parameters (Meta-SGD's rates; none for most), checked
    against what ``algorithm`` expects."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / EXPORT_ALGORITHM
    try:
        name = EXPORT_WEIGHTS
        model.load_state_dict(load_file(str(folder / name)))
        name = EXPORT_ALGORITHM
        # Checked: a Meta-SGD export without its rates (or rates for another algorithm) is an error.
        missing, unexpected = algorithm.load_state_dict(
            load_file(str(path)) if path.is_file() else {}, strict=False
        )
    except (SafetensorError, RuntimeError) as exc:  # truncated, or tensors of another model
        detail = " ".join(str(exc).split())  # load_state_dict's list of mismatches, on one line
        raise UserError(
            f"{folder / name} is damaged or does not match {EXPORT_CONFIG} ({detail[:300]}); "
            "export the checkpoint again"
        ) from None
    if missing or unexpected:
        raise ValueError(
            f"{folder}: the parameters of meta.algorithm={algorithm_name} do not match "
            f"{EXPORT_ALGORITHM} (missing {missing}, unexpected {unexpected}); export the checkpoint again"
        )
