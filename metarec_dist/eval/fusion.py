"""The fusion with co-occurrence counts as part of an exported model.

``metarec evaluate --fuse`` scores ``log_softmax(model) + weight * log(counts + eps)`` (``FusedScorer``) with
a weight chosen on validation users; on Amazon Sports that is the recommended recipe's best row
(docs/results/amazon-sports.md). For a user to get the same recommendations, the export carries it:
``metarec export --fuse`` (the default when the run's config says ``eval.fuse: true``) chooses the test-time
adaptation and the weight on validation users exactly as the evaluation does, saves the training users'
counts (``cooccurrence.safetensors``) and the choice (``fusion`` in ``metarec_config.json``), and
``metarec recommend`` on that export fuses at that weight after that adaptation.

The counts come from the training users of the run's own data split only, as in the evaluation.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metarec_dist import checkpoint as ckpt
from metarec_dist.errors import UserError
from metarec_dist.eval.loading import LoadedModel, with_training_folder_paths
from metarec_dist.eval.protocol import (
    CRITERION,
    FUSION_EPS,
    Adaptation,
    AdaptingScorer,
    FusedScorer,
)
from metarec_dist.metrics.cooccurrence import ItemCooccurrence

if TYPE_CHECKING:
    from metarec_dist.config import Config

log = logging.getLogger("metarec")

FUSION_KEY = "fusion"  # the choice, in the export's metarec_config.json


@dataclass
class Fusion:
    """An export's fusion: the weight, the counts, and the adaptation (steps, inner lr per support size) the
    weight was chosen with."""

    weight: float
    cooc: ItemCooccurrence
    steps: int
    inner_lr: float
    per_shot: dict[int, tuple[int, float]] | None = None  # eval.adaptation: per_shot

    def setting(self, history: int) -> tuple[int, float]:
        """(steps, inner lr) for a history of ``history`` items: with per-K choices, the largest chosen K
        not above it (the smallest K for a shorter history)."""
        if not self.per_shot:
            return self.steps, self.inner_lr
        shots = sorted(self.per_shot)
        fitting = [k for k in shots if k <= history]
        return self.per_shot[fitting[-1] if fitting else shots[0]]

    def scorer(self, base: AdaptingScorer) -> FusedScorer:
        return FusedScorer(base, self.cooc, self.weight)

    def adaptation(self, shots: Sequence[int]) -> Adaptation:
        """The adaptation this export applies to supports of ``shots`` items, as ``metarec recommend`` picks
        it for a history of that length (``setting``): what ``metarec evaluate --fuse`` scores the export
        with, instead of choosing again on validation users (which can differ for other shots or users)."""
        settings = {k: self.setting(k) for k in shots}
        if not self.per_shot:
            return Adaptation(self.steps, self.inner_lr, selected_on="export")
        # No validation score: the choice was made at export time, on the export's own shots.
        per_shot = {k: (s, lr, math.nan) for k, (s, lr) in settings.items()}
        return Adaptation(self.steps, self.inner_lr, selected_on="export", per_shot=per_shot)


# The largest weight whose fused float32 scores stay finite (weight * log(FUSION_EPS) must not overflow).
MAX_FUSION_WEIGHT = float(np.finfo(np.float32).max) / 2 / -math.log(FUSION_EPS)


def check_weight(weight: float, what: str) -> float:
    """``weight`` if it is a usable fusion weight (NaN, infinite or negative ones are not), else a
    ``UserError`` naming ``what``."""
    if not 0.0 <= weight <= MAX_FUSION_WEIGHT:  # False for NaN too
        raise UserError(
            f"{what} must be a number from 0 (the model alone) to {MAX_FUSION_WEIGHT:.3g}, got {weight}"
        )
    return weight


def wants_fusion(cfg: Config, fuse: bool | None, weight: float | None) -> bool:
    """Whether ``metarec export`` fuses: ``--fuse``/``--no-fuse``, else when ``--fuse-weight`` is given,
    else the run's ``eval.fuse``."""
    if weight is not None:
        check_weight(weight, "--fuse-weight")
    if weight is not None and fuse is False:
        raise UserError("--fuse-weight: this export does not fuse (--no-fuse); drop one of the two")
    if fuse is None:
        return weight is not None or cfg.eval.fuse
    return fuse


def fusion_protocol(loaded: LoadedModel) -> str:
    """The protocol an export's fusion is chosen under: the model's own, except for a model trained with
    ``data.protocol: new_items``, whose default protocol ranks only the held-out items: no training user had
    them, so their counts are all zero, every weight ties and 0 was always chosen. ``metarec recommend``
    ranks every item, new and old, as the ``mixed`` protocol does: the choice is made there."""
    from metarec_dist.eval.cli import protocol_name
    from metarec_dist.eval.item_protocol import ITEM_PROTOCOLS

    name = protocol_name(loaded, None)
    return "mixed" if name in ITEM_PROTOCOLS else name


def add_fusion(
    folder: Path, fuse: bool | None = None, weight: float | None = None, run_dir: Path | None = None
) -> None:
    """``metarec export``'s last step, on the complete temp export in ``folder``: when fusing, choose the
    adaptation and (unless ``weight`` fixes it) the weight on validation users, as ``metarec evaluate
    --fuse`` does, and write the counts and the choice beside the weights. ``run_dir``: the run folder of
    the checkpoint exported, whose place says where relative data files are
    (``with_training_folder_paths``)."""
    from safetensors.torch import save_file

    from metarec_dist.config import Config, from_dict
    from metarec_dist.eval.cli import model_protocol

    # Decided from the config file alone: a plain export (the common case) loads no model here.
    stored = json.loads((folder / ckpt.EXPORT_CONFIG).read_text(encoding="utf-8"))["config"]
    if not wants_fusion(from_dict(Config, stored), fuse, weight):
        return
    model, cfg, meta, state = ckpt.load_exported(folder)
    if run_dir is not None:
        cfg = with_training_folder_paths(cfg, run_dir)
    loaded = LoadedModel(model=model, cfg=cfg, meta=meta, source=folder, algorithm_state=state)
    try:
        protocol, _ = model_protocol(loaded, sorted(cfg.eval.shots), fusion_protocol(loaded))
    except ValueError as exc:  # DataError included: the data is gone, moved or changed
        raise UserError(
            f"export --fuse: the fusion counts the run's training users and chooses its weight on its "
            f"validation users, and their data is not usable here: {exc}. Pass --no-fuse to export the "
            "model alone"
        ) from None
    if not protocol.splits.valid:
        raise UserError(
            "export --fuse: the run has no validation users (data.valid_frac is 0) to choose the fusion's "
            "adaptation and weight on; pass --no-fuse to export the model alone"
        )
    log.info("export: choosing the test-time adaptation on validation users")
    adaptation = protocol.choose_adaptation(loaded)
    if weight is None:
        log.info("export: choosing the fusion weight on validation users")
        adaptation = protocol.choose_fusion(loaded, adaptation)
    else:
        adaptation = replace(adaptation, fusion=float(weight))
    cooc = protocol.cooc_model
    save_file({k: v.contiguous() for k, v in cooc.state_dict().items()}, str(folder / ckpt.EXPORT_COOC))
    meta[FUSION_KEY] = fusion_meta(adaptation, cooc, chosen="valid" if weight is None else "fixed")
    (folder / ckpt.EXPORT_CONFIG).write_text(json.dumps(meta, indent=1))
    log.info("export: fused with the co-occurrence counts at weight %g", adaptation.fusion)


def fusion_meta(adaptation: Adaptation, cooc: ItemCooccurrence, chosen: str) -> dict[str, Any]:
    """What ``load_fusion`` reads back, plus the validation scores the choice was made on."""
    out: dict[str, Any] = {
        "weight": adaptation.fusion,
        "selected_on": chosen,  # valid: the best of FUSION_WEIGHTS on validation users; fixed: --fuse-weight
        "eps": FUSION_EPS,
        "horizon": cooc.horizon,
        "recency": cooc.recency,
        "steps": adaptation.steps,
        "inner_lr": adaptation.inner_lr,
        "adaptation_selected_on": adaptation.selected_on,
    }
    if adaptation.per_shot is not None:
        out["per_shot"] = {str(k): [s, lr] for k, (s, lr, _) in sorted(adaptation.per_shot.items())}
    if adaptation.fusion_scores:
        out[f"val_{CRITERION}"] = {str(w): v for w, v in sorted(adaptation.fusion_scores.items())}
    return out


def load_fusion(folder: Path, meta: dict[str, Any]) -> Fusion | None:
    """The fusion an export carries (None: none). A half-present one (the choice without the counts, or the
    reverse) or one that does not fit the catalogue is a damaged export."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path, info = Path(folder) / ckpt.EXPORT_COOC, meta.get(FUSION_KEY)
    if info is None and not path.is_file():
        return None
    if info is None or not path.is_file():
        missing = f"{FUSION_KEY!r} in {ckpt.EXPORT_CONFIG}" if info is None else ckpt.EXPORT_COOC
        raise UserError(f"{folder}: a fused export without {missing}; export the checkpoint again")
    try:
        if not isinstance(info, dict):
            raise TypeError(f"{FUSION_KEY!r} is a {type(info).__name__}, not an object")
        if info.get("eps", FUSION_EPS) != FUSION_EPS:
            raise ValueError(f"eps {info['eps']} is not this version's {FUSION_EPS}")
        per_shot = info.get("per_shot")
        if per_shot is not None and not isinstance(per_shot, dict):
            raise TypeError(f"'per_shot' is a {type(per_shot).__name__}, not an object")
        fusion = Fusion(
            weight=check_weight(float(info["weight"]), "the weight"),
            cooc=ItemCooccurrence.from_state_dict(
                load_file(str(path)), int(meta["num_items"]), int(info["horizon"]), float(info["recency"])
            ),
            steps=int(info["steps"]),
            inner_lr=float(info["inner_lr"]),
            per_shot=None
            if per_shot is None
            else {int(k): (int(s), float(lr)) for k, (s, lr) in per_shot.items()},
        )
        settings = [(fusion.steps, fusion.inner_lr), *(fusion.per_shot or {}).values()]
        if not all(s >= 0 and 0.0 <= lr < math.inf for s, lr in settings):
            raise ValueError(f"adaptation steps and inner lr must be >= 0 and finite, got {settings}")
        return fusion
    except (KeyError, TypeError, ValueError, OSError, SafetensorError) as exc:
        raise UserError(
            f"{folder}: the fusion ({FUSION_KEY!r} in {ckpt.EXPORT_CONFIG}, {ckpt.EXPORT_COOC}) is damaged: "
            f"{exc}; export the checkpoint again"
        ) from None
