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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from metarec_dist import checkpoint as ckpt
from metarec_dist.errors import UserError
from metarec_dist.eval.protocol import (
    CRITERION,
    FUSION_EPS,
    Adaptation,
    AdaptingScorer,
    FusedScorer,
)
from metarec_dist.eval.stored_adaptation import (
    ADAPTATION_KEY,
    StoredAdaptation,
    adaptation_meta,
    parse_adaptation,
    validation_protocol,
)
from metarec_dist.metrics.cooccurrence import ItemCooccurrence

if TYPE_CHECKING:
    import torch

    from metarec_dist.config import Config

log = logging.getLogger("metarec")

FUSION_KEY = "fusion"  # the choice, in the export's metarec_config.json


@dataclass(kw_only=True)
class Fusion(StoredAdaptation):
    """An export's fusion: the weight, the counts, and the adaptation (steps, inner lr per support size) the
    weight was chosen with."""

    weight: float
    cooc: ItemCooccurrence

    def scorer(self, base: AdaptingScorer) -> FusedScorer:
        return FusedScorer(base, self.cooc, self.weight)


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


def add_fusion(
    folder: Path,
    fuse: bool | None = None,
    weight: float | None = None,
    run_dir: Path | None = None,
    fixed: tuple[int, float] | None = None,
    device: torch.device | str = "cpu",
) -> bool:
    """``metarec export``'s last step, on the complete temp export in ``folder``: when fusing, choose the
    adaptation (unless ``fixed`` gives it) and the weight (unless ``weight`` fixes it) on validation users,
    as ``metarec evaluate --fuse`` does, with the model on ``device`` (``--device``), and write the counts
    (computed on the CPU) and the choice beside the weights. ``run_dir``:
    the run folder of the checkpoint exported, whose place says where relative data files are
    (``with_training_folder_paths``). Returns whether it fused."""
    from safetensors.torch import save_file

    from metarec_dist.config import Config, from_dict

    # Decided from the config file alone: a plain export (the common case) loads no model here.
    stored = json.loads((folder / ckpt.EXPORT_CONFIG).read_text(encoding="utf-8"))["config"]
    if not wants_fusion(from_dict(Config, stored), fuse, weight):
        return False
    loaded, protocol = validation_protocol(
        folder,
        run_dir,
        "export --fuse: the fusion counts the run's training users and",
        "Pass --no-fuse to export the model alone",
        device,
    )
    log.info("export: choosing the test-time adaptation on validation users")
    adaptation = protocol.choose_adaptation(loaded, fixed=fixed)
    if weight is None:
        log.info("export: choosing the fusion weight on validation users")
        adaptation = protocol.choose_fusion(loaded, adaptation)
    else:
        adaptation = replace(adaptation, fusion=float(weight))
    cooc = protocol.cooc_model
    save_file({k: v.contiguous() for k, v in cooc.state_dict().items()}, str(folder / ckpt.EXPORT_COOC))
    meta = loaded.meta
    meta[FUSION_KEY] = fusion_meta(adaptation, cooc, chosen="valid" if weight is None else "fixed")
    if fixed is not None:  # --steps is the user's adaptation for the model alone too (recommend --no-fuse)
        meta[ADAPTATION_KEY] = adaptation_meta(Adaptation(*fixed, selected_on="fixed"))
    (folder / ckpt.EXPORT_CONFIG).write_text(json.dumps(meta, indent=1))
    log.info("export: fused with the co-occurrence counts at weight %g", adaptation.fusion)
    return True


def fusion_meta(adaptation: Adaptation, cooc: ItemCooccurrence, chosen: str) -> dict[str, Any]:
    """What ``load_fusion`` reads back, plus the validation scores the choice was made on."""
    out: dict[str, Any] = {
        "weight": adaptation.fusion,
        "selected_on": chosen,  # valid: the best of FUSION_WEIGHTS on validation users; fixed: --fuse-weight
        "eps": FUSION_EPS,
        "horizon": cooc.horizon,
        "recency": cooc.recency,
        **adaptation_meta(adaptation),
    }
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
        fusion = Fusion(
            weight=check_weight(float(info["weight"]), "the weight"),
            cooc=ItemCooccurrence.from_state_dict(
                load_file(str(path)), int(meta["num_items"]), int(info["horizon"]), float(info["recency"])
            ),
            **parse_adaptation(info, FUSION_KEY),
        )
        return fusion
    except (KeyError, TypeError, ValueError, OSError, SafetensorError) as exc:
        raise UserError(
            f"{folder}: the fusion ({FUSION_KEY!r} in {ckpt.EXPORT_CONFIG}, {ckpt.EXPORT_COOC}) is damaged: "
            f"{exc}; export the checkpoint again"
        ) from None
