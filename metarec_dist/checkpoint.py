"""Checkpoints: engine shards + client state + a manifest written last.

Layout of one checkpoint (``<run_dir>/checkpoints/step_000100/``)::

    engine/<tag>/...          the engine's files: DeepSpeed ZeRO shards (one per rank) or local safetensors
    engine/latest             DeepSpeed's tag file (written by global rank 0)
    client_state.json         meta-step, task-stream position, W&B run id, resolved config
    rng_rank<r>.safetensors   each rank's torch RNG state
    manifest.json             every file above with its size and sha256; written LAST, atomically

A checkpoint without a manifest is incomplete (a crash mid-save) and is never resumed from; a file whose
size or checksum differs from the manifest is named in the error. Nothing here unpickles: JSON, safetensors,
and the engines load their own files with ``weights_only`` where they can.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from metarec_dist.errors import UserError

if TYPE_CHECKING:
    from metarec_dist.config import Config
    from metarec_dist.models.recommender import SeqRecommender

MANIFEST = "manifest.json"
CLIENT_STATE = "client_state.json"
_STEP_DIR = re.compile(r"^step_(\d{6,})$")
_RAY_STEP_DIR = re.compile(r"^checkpoint_step_(\d{6,})$")


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def ray_checkpoint_name(step: int) -> str:
    """The folder Ray Train stores a reported checkpoint under, next to its own files in the run folder."""
    return f"checkpoint_step_{step:06d}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    from safetensors.torch import save_file

    save_file({"cpu": torch.get_rng_state()}, str(folder / f"rng_rank{rank}.safetensors"))


def load_rng(folder: Path, rank: int) -> None:
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


def verify(folder: Path) -> dict[str, Any]:
    """The manifest of a complete, intact checkpoint; ``UserError`` naming what is missing or damaged."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise UserError(f"checkpoint {folder} is incomplete: no {MANIFEST} (was the save interrupted?)")
    manifest = _read_manifest(mpath)
    for rel, meta in manifest["files"].items():
        p = folder / rel
        if not p.is_file():
            raise UserError(f"checkpoint {folder}: shard {rel} is missing")
        if p.stat().st_size != meta["size"]:
            raise UserError(
                f"checkpoint {folder}: shard {rel} is truncated or changed "
                f"({p.stat().st_size} bytes, manifest says {meta['size']})"
            )
        if sha256_file(p) != meta["sha256"]:
            raise UserError(f"checkpoint {folder}: shard {rel} fails its sha256 check")
    return manifest


def _read_manifest(mpath: Path) -> dict[str, Any]:
    """A manifest that is JSON of the shape :func:`write_manifest` writes, or a ``UserError`` naming it."""
    damaged = f"{mpath} is damaged (not a metarec checkpoint manifest)"
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{damaged}: {exc}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(m, dict) and isinstance(m.get("size"), int) and isinstance(m.get("sha256"), str)
        for m in files.values()
    ):
        raise UserError(f"{damaged}: expected a 'files' mapping of name -> size and sha256")
    for key in ("step", "world_size"):
        if not isinstance(manifest.get(key), int):
            raise UserError(f"{damaged}: '{key}' is missing or not an integer")
    return manifest


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
    """``path`` itself, or, for a run folder, its newest complete checkpoint (``ValueError`` if none)."""
    path = Path(path)
    if (path / MANIFEST).is_file() or not list_checkpoints(path):
        return path
    latest = latest_complete(path)
    if latest is None:
        raise ValueError(f"run folder {path}: no complete checkpoint (none has a {MANIFEST})")
    return latest


def latest_complete(run_dir: Path) -> Path | None:
    """The newest checkpoint that has a manifest (complete). Damage inside it is reported at load time."""
    complete = [p for p in list_checkpoints(run_dir) if (p / MANIFEST).is_file()]
    return complete[-1] if complete else None


def prune(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints, and incomplete ones older than those."""
    ckpts = list_checkpoints(run_dir)
    complete = [p for p in ckpts if (p / MANIFEST).is_file()]
    keep_set = set(complete[-keep:])
    newest_kept = min(keep_set, key=lambda p: p.name) if keep_set else None
    for p in ckpts:
        if p not in keep_set and (newest_kept is None or p.name < newest_kept.name):
            shutil.rmtree(p, ignore_errors=True)


@private_files()  # 0600 files, whoever writes them
def save_checkpoint(
    engine: Any,
    folder: Path,
    client_state: dict[str, Any],
    rank: int,
    world_size: int,
    barrier: Callable[[], None],
    all_gather: Callable[[Any], list[Any]],
) -> None:
    """Every rank calls this (DeepSpeed's save is a collective). ``folder`` may be shared by the ranks or
    be each rank's own staging folder (Ray merges those into one checkpoint): each rank lists what it wrote,
    the lists are gathered, and rank 0 writes the manifest last, so it only ever names finished files."""
    folder = Path(folder)
    if rank == 0 and (folder / MANIFEST).exists():
        (folder / MANIFEST).unlink()  # re-saving a step: it is incomplete until the new manifest lands
    folder.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(folder / "engine"), tag="state")
    save_rng(folder, rank)
    if rank == 0:
        atomic_write_text(folder / CLIENT_STATE, json.dumps(client_state, indent=1))
    barrier()
    merged: dict[str, dict[str, Any]] = {}
    for entries in all_gather(file_entries(folder)):
        merged.update(entries)
    if rank == 0:
        write_manifest(folder, int(client_state["step"]), world_size, merged)
    barrier()


def load_checkpoint(engine: Any, folder: Path, rank: int) -> dict[str, Any]:
    folder = Path(folder)
    manifest = verify(folder)
    engine.load_checkpoint(str(folder / "engine"), tag="state")
    load_rng(folder, rank)
    state = json.loads((folder / CLIENT_STATE).read_text())
    state["_manifest_world_size"] = manifest["world_size"]
    return state


# ------------------------------------------------------------------------------------------ export

EXPORT_CONFIG = "metarec_config.json"
EXPORT_WEIGHTS = "model.safetensors"
EXPORT_ALGORITHM = "algorithm.safetensors"  # parameters the algorithm owns (Meta-SGD's rates), if any
# The files an export holds: a folder with the required ones, maybe the optional ones, and nothing else is
# a previous export, the only kind of non-empty folder `export` replaces (with overwrite=True); nothing else
# is ever deleted.
EXPORT_FILES = frozenset({EXPORT_CONFIG, EXPORT_WEIGHTS})
EXPORT_OPTIONAL = frozenset({EXPORT_ALGORITHM})


def export(checkpoint_dir: Path, out_dir: Path, overwrite: bool = False) -> Path:
    """Consolidate a (sharded) checkpoint into ``model.safetensors`` + ``metarec_config.json`` that load and
    score with :func:`load_exported`: no DeepSpeed, no Ray. Written to a temp folder beside ``out_dir``, then
    renamed. ``out_dir`` must be new, empty, or (with ``overwrite``) a previous export; it may not be the
    checkpoint, a folder above it or inside it."""
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
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        save_file(weights, str(tmp / EXPORT_WEIGHTS))
        if algorithm:
            save_file(algorithm, str(tmp / EXPORT_ALGORITHM))
        meta = {k: client[k] for k in ("config", "num_items", "step", "item_titles") if k in client}
        (tmp / EXPORT_CONFIG).write_text(json.dumps(meta, indent=1))
        _check_export_target(checkpoint_dir, out_dir, overwrite)  # again: it may have changed meanwhile
        _replace_export(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temp folder, nothing else
        raise
    return out_dir


def _is_export(folder: Path) -> bool:
    names = {p.name for p in folder.iterdir()}
    return EXPORT_FILES <= names <= EXPORT_FILES | EXPORT_OPTIONAL and all(
        (folder / n).is_file() and not (folder / n).is_symlink() for n in names
    )


def _check_export_target(checkpoint_dir: Path, out_dir: Path, overwrite: bool) -> None:
    src, out = checkpoint_dir.resolve(), out_dir.resolve()
    if out == src or out in src.parents or src in out.parents:
        raise UserError(
            f"export --out {out_dir}: overlaps the checkpoint being exported ({checkpoint_dir}); "
            "choose a folder outside it"
        )
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"export --out {out_dir}: {parent} is a file, not a folder")
    if not out_dir.exists():
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
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
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old."))
    old.rmdir()
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    for name in EXPORT_FILES | EXPORT_OPTIONAL:
        (old / name).unlink(missing_ok=True)
    old.rmdir()


class Exported(NamedTuple):
    model: SeqRecommender  # in eval mode
    cfg: Config
    meta: dict[str, Any]  # num_items, step, item_titles, config
    algorithm_state: dict[str, torch.Tensor]  # the algorithm's own parameters ({} for most algorithms)


def load_exported(folder: Path) -> Exported:
    """The model, its config and metadata, and the trained algorithm's parameters, from an exported
    folder."""
    from safetensors.torch import load_file

    from metarec_dist.config import Config, from_dict
    from metarec_dist.meta import build_algorithm
    from metarec_dist.models.recommender import SeqRecommender

    folder = Path(folder)
    for name in (EXPORT_WEIGHTS, EXPORT_CONFIG):
        if not (folder / name).is_file():
            raise UserError(
                f"{folder} is not an exported model: {name} is missing (run `metarec export` first)"
            )
    try:
        meta = json.loads((folder / EXPORT_CONFIG).read_text(encoding="utf-8"))
        cfg = from_dict(Config, meta["config"])
        num_items = int(meta["num_items"])
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
        raise UserError(f"{folder / EXPORT_CONFIG} is damaged or not a metarec export: {exc!r}") from None
    model = SeqRecommender(cfg.model, num_items)
    model.load_state_dict(load_file(str(folder / EXPORT_WEIGHTS)))
    algorithm = build_algorithm(cfg.meta, model.head.size)
    path = folder / EXPORT_ALGORITHM
    # Checked: a Meta-SGD export without its rates (or rates for another algorithm) is an error, not a guess.
    missing, unexpected = algorithm.load_state_dict(
        load_file(str(path)) if path.is_file() else {}, strict=False
    )
    if missing or unexpected:
        raise ValueError(
            f"{folder}: the parameters of meta.algorithm={cfg.meta.algorithm} do not match "
            f"{EXPORT_ALGORITHM} (missing {missing}, unexpected {unexpected}); export the checkpoint again"
        )
    return Exported(model.eval(), cfg, meta, dict(algorithm.state_dict()))
