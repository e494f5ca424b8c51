"""Load what an evaluation needs: the model (from a training checkpoint, a run folder or an export) and the
data split it was trained on (rebuilt from the checkpoint's own ``data:`` config, so the held-out users are
exactly the ones training never saw)."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metarec_dist import checkpoint as ckpt
from metarec_dist.config import Config
from metarec_dist.data.config import DATA_PATH_KEYS
from metarec_dist.errors import UserError
from metarec_dist.models.recommender import SeqRecommender
from metarec_dist.run_folder import DATA_FOLDER, recorded_data_folder

if TYPE_CHECKING:
    from metarec_dist.data.prepared import PreparedData
    from metarec_dist.eval.fusion import Fusion
    from metarec_dist.eval.stored_adaptation import StoredAdaptation


@dataclass
class LoadedModel:
    model: SeqRecommender
    cfg: Config
    meta: dict[str, Any]  # num_items, item_titles (JSON: string keys), step, config
    source: Path
    # The trained algorithm's own parameters (Meta-SGD's learned inner lrs; {} for most algorithms).
    algorithm_state: dict[str, torch.Tensor] = field(default_factory=dict)
    # An export made with ``--fuse``: the co-occurrence counts and the chosen weight (eval/fusion.py).
    fusion: Fusion | None = None
    # A plain export made with ``--choose-adaptation`` / ``--steps``: the test-time adaptation it applies
    # (eval/stored_adaptation.py); None: the trained one.
    adaptation: StoredAdaptation | None = None
    # A run validated with train.eval_adaptation: searched: the adaptation its final validation chose per
    # support size (checkpoint.VALIDATED_ADAPTATION), which recommend and serve apply without a record.
    validated: StoredAdaptation | None = None

    @property
    def algorithm(self) -> str:
        return self.cfg.meta.algorithm


def resolve_checkpoint(path: str | Path, flag: str = "--checkpoint") -> Path:
    """A checkpoint folder (manifest.json), an exported folder, or a run folder (its latest complete
    checkpoint). ``ValueError`` naming ``flag`` (the option that gave the path) if it is none of these."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"{flag} {p}: no such folder")
    if (p / ckpt.EXPORT_CONFIG).is_file():
        return p
    found = ckpt.find_checkpoint(p)
    if (found / ckpt.MANIFEST).is_file():
        return found
    raise ValueError(
        f"{flag} {p}: not a checkpoint (no {ckpt.MANIFEST}), an exported model (no "
        f"{ckpt.EXPORT_CONFIG}) or a run folder with a complete checkpoint"
    )


def load_model(path: str | Path, flag: str = "--checkpoint") -> LoadedModel:
    """The model in eval mode; a training checkpoint is exported on the fly into a temp folder. ``flag``:
    the option that gave ``path``, for the error when it is no model."""
    # A run folder may be training meanwhile and prune the checkpoint being read: read_newest retries.
    return ckpt.read_newest(Path(path), lambda p: resolve_checkpoint(p, flag), _load_folder)


def _load_folder(folder: Path) -> LoadedModel:
    from metarec_dist.eval.fusion import load_fusion
    from metarec_dist.eval.stored_adaptation import load_adaptation, load_validated

    adaptation = None
    if (folder / ckpt.EXPORT_CONFIG).is_file():
        model, cfg, meta, state = ckpt.load_exported(folder)
        fusion = load_fusion(folder, meta)
        adaptation = load_adaptation(folder, meta)
        cfg = with_training_folder_paths(cfg, None, meta.get(DATA_FOLDER))  # recorded when it was exported
    else:  # a training checkpoint carries no fusion: `metarec export` adds it
        with tempfile.TemporaryDirectory(prefix="metarec-eval-") as tmp:
            model, cfg, meta, state = ckpt.load_exported(ckpt.export(folder, Path(tmp) / "export"))
        fusion = None
        # the checkpoint's own record (it travels with a copy), then its run folder's
        cfg = with_training_folder_paths(cfg, ckpt.run_dir_of(folder), meta.get(DATA_FOLDER))
    return LoadedModel(
        model=model,
        cfg=cfg,
        meta=meta,
        source=folder,
        algorithm_state=state,
        fusion=fusion,
        adaptation=adaptation,
        validated=load_validated(folder, meta),
    )


def training_folder(cfg: Config, run_dir: Path) -> Path | None:
    """The folder training ran from, read off where its run folder is: ``<that>/<storage_path>/<run_name>``
    with a relative ``runtime.storage_path`` (None where the run folder does not say: an absolute or cloud
    storage path, or a run folder moved since). The rule for runs from before the run folder recorded the
    folder itself (``run_folder.RUN_INFO``)."""
    storage = Path(cfg.runtime.storage_path)
    if "://" in cfg.runtime.storage_path or storage.is_absolute() or ".." in storage.parts:
        return None
    run_dir = run_dir.resolve()
    parts = [*storage.parts, cfg.runtime.run_name]
    if tuple(run_dir.parts[-len(parts) :]) != tuple(parts) or len(run_dir.parts) <= len(parts):
        return None
    return run_dir.parents[len(parts) - 1]


def recorded_folders(run_dir: Path | None, recorded: object = None) -> list[Path]:
    """The folders training recorded it read its relative data files from: an export's (``recorded``, its
    ``data_folder``) and its run folder's (``run_folder.RUN_INFO``)."""
    found = [Path(recorded)] if isinstance(recorded, str) and Path(recorded).is_absolute() else []
    if run_dir is not None and (folder := recorded_data_folder(run_dir)) is not None:
        found.append(folder)
    return list(dict.fromkeys(found))


def with_training_folder_paths(cfg: Config, run_dir: Path | None, recorded: object = None) -> Config:
    """``cfg`` with relative data files found where training read them: `metarec evaluate --checkpoint
    /abs/runs/x` run from another folder read ``data.path: log.csv`` relative to that folder and failed, and
    so did a moved run folder or an export evaluated elsewhere. First the folder training recorded
    (``recorded_folders``), where the file is still there; else the current folder; else, for a run from
    before the record, the folder its run folder's place says (``training_folder``). The data check
    (``check_same_data``) still compares what is read with what the model was trained on."""
    first = recorded_folders(run_dir, recorded)
    last = [] if run_dir is None or (root := training_folder(cfg, run_dir)) is None else [root]
    moved = {}
    for key in DATA_PATH_KEYS:
        value = getattr(cfg.data, key)
        if value is None or "://" in value or Path(value).expanduser().is_absolute():
            continue
        here = [Path.cwd()] if Path(value).exists() else []
        found = next((r for r in [*first, *here, *last] if (r / value).exists()), None)
        if found is not None and found not in here:
            moved[key] = str(found / value)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **moved)) if moved else cfg


def load_prepared(cfg: Config) -> PreparedData:
    """``PreparedData`` of the checkpoint's data config (same files, preprocessing, seed, user split)."""
    from metarec_dist.data import prepare_data

    return prepare_data(cfg.data)


def check_same_data(loaded: LoadedModel, prepared: PreparedData) -> None:
    """The data prepared from the checkpoint's config must be the data the model was trained on, or every
    item column (and the user split) means something else: the catalogue's size, its raw item ids in order,
    the training users' sequences and the side tables, each compared when the checkpoint records it (older
    ones lack the digests). The same file read again, or a copy of it at another path, is the same data."""
    num_items = prepared.num_items
    if int(loaded.meta["num_items"]) != num_items:
        what = f"the model scores {loaded.meta['num_items']} items but the data now gives {num_items}"
        raise UserError(_other_data(loaded, what))
    saved_ids, ids = loaded.meta.get("item_raw_ids"), prepared.item_raw_ids
    if saved_ids is not None and not isinstance(saved_ids, list):  # as recommend's load_catalogue says
        raise UserError(
            f"{loaded.source}: the item ids it stores are damaged ('item_raw_ids' is a "
            f"{type(saved_ids).__name__}, not a list); export the checkpoint again"
        )
    if isinstance(saved_ids, list) and ids is not None and [str(r) for r in saved_ids] != list(map(str, ids)):
        pairs = enumerate(zip(saved_ids, ids, strict=False))  # lengths differ: the first gap is named
        i = next((i for i, (a, b) in pairs if str(a) != str(b)), min(len(saved_ids), len(ids)))
        was, now = (r[i] if i < len(r) else None for r in (saved_ids, ids))
        raise UserError(_other_data(loaded, f"item {i + 1} was {was!r}, the data now has {now!r}"))
    differs = _digests_differ(loaded, prepared)
    if differs:
        raise UserError(_other_data(loaded, differs))


def _digests_differ(loaded: LoadedModel, prepared: PreparedData) -> str | None:
    """What of the training data differs from the digests the checkpoint recorded (None: nothing, or no
    digest to compare with)."""
    from metarec_dist.data.digest import features_digest, sharded_digest

    saved = loaded.meta.get(ckpt.TRAIN_DATA)
    if isinstance(saved, str):
        splits = prepared.user_splits()
        # Several ranks record the digest of their shards' digests: the world sizes this run may have had.
        if not any(
            saved == sharded_digest(splits.train, splits.train_users, w) for w in _world_sizes(loaded)
        ):
            return "its training users or their interactions differ"
    saved_features = loaded.meta.get(ckpt.TRAIN_FEATURES)
    if isinstance(saved_features, str) and saved_features != features_digest(prepared.features):
        return "its user or item side tables (data.user_features / data.item_features files) differ"
    return None


def _world_sizes(loaded: LoadedModel) -> list[int]:
    sizes = [1]
    if loaded.cfg.runtime.backend == "ray":
        sizes.append(int(loaded.cfg.runtime.num_workers))
    # A training checkpoint's manifest names the world size that wrote it; an export has none (UserError).
    with contextlib.suppress(ValueError, KeyError, TypeError):
        sizes.append(int(ckpt.read_manifest(loaded.source)["world_size"]))
    return sorted(set(sizes))


def _other_data(loaded: LoadedModel, what: str) -> str:
    """The one-line refusal: the model, the data it was pointed at, what differs, what to do."""
    data = loaded.cfg.data
    where = data.path if data.path is not None else (data.name or f"format {data.format}")
    return (
        f"{loaded.source} was trained on other data than {where} now holds: {what} (the files changed since "
        "training: item ids would name other items, test users may be ones it trained on). Put back the "
        "data it was trained on, or train a new run on this data (train.init_from: this model's run folder "
        "starts it from these weights)"
    )
