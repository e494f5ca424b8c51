"""Load what an evaluation needs: the model (from a training checkpoint, a run folder or an export) and the
data split it was trained on (rebuilt from the checkpoint's own ``data:`` config, so the held-out users are
exactly the ones training never saw)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metarec_dist import checkpoint as ckpt
from metarec_dist.config import Config
from metarec_dist.models.recommender import SeqRecommender

if TYPE_CHECKING:
    from metarec_dist.data.prepared import PreparedData
    from metarec_dist.eval.fusion import Fusion


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

    if (folder / ckpt.EXPORT_CONFIG).is_file():
        model, cfg, meta, state = ckpt.load_exported(folder)
        fusion = load_fusion(folder, meta)
    else:  # a training checkpoint carries no fusion: `metarec export` adds it
        with tempfile.TemporaryDirectory(prefix="metarec-eval-") as tmp:
            model, cfg, meta, state = ckpt.load_exported(ckpt.export(folder, Path(tmp) / "export"))
        fusion = None
    return LoadedModel(model=model, cfg=cfg, meta=meta, source=folder, algorithm_state=state, fusion=fusion)


def load_prepared(cfg: Config) -> PreparedData:
    """``PreparedData`` of the checkpoint's data config (same files, preprocessing, seed, user split)."""
    from metarec_dist.data import prepare_data

    return prepare_data(cfg.data)


def check_same_data(loaded: LoadedModel, num_items: int) -> None:
    """The catalogue the data gives must be the one the model scores; otherwise columns mean other items."""
    if int(loaded.meta["num_items"]) != num_items:
        raise ValueError(
            f"{loaded.source}: the model scores {loaded.meta['num_items']} items but its data config now "
            f"gives {num_items}; was the data changed since training? ({json.dumps(loaded.cfg.data.name)})"
        )
