"""The test-time adaptation an exported model applies, recorded in the export.

Without a record, ``metarec recommend`` and ``metarec serve`` adapt with the trained ``meta.adaptation_steps``
(or the steps the run validated with, ``train.eval_steps``, where set) and ``meta.inner_lr``, while ``metarec
evaluate`` reports the model at the adaptation it chooses on validation users. The two can differ a lot: on
MovieLens 100K the GPU recipe's trained 3 steps at lr 0.5 read 0.203 NDCG@10 on validation users where its
chosen adaptation reads 0.232 and no step at all 0.228 (docs/results/amazon-sports.md, "GPU, second look").
``metarec export --choose-adaptation`` chooses it on validation users exactly as the evaluation does and
``--steps N [--inner-lr LR]`` fixes it (``--steps 0``: serve the meta-trained initialisation); either is
written as ``adaptation`` in ``metarec_config.json`` and recommend, serve and evaluate apply it. A fused
export (``eval/fusion.py``) records its adaptation inside its fusion, the same way.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metarec_dist import checkpoint as ckpt
from metarec_dist.errors import UserError
from metarec_dist.eval.loading import LoadedModel, with_training_folder_paths
from metarec_dist.eval.protocol import Adaptation, ColdStartProtocol
from metarec_dist.run_folder import DATA_FOLDER

if TYPE_CHECKING:
    import torch

log = logging.getLogger("metarec")

ADAPTATION_KEY = "adaptation"  # a plain export's recorded adaptation, in its metarec_config.json


@dataclass(kw_only=True)
class StoredAdaptation:
    """(steps, inner lr) an export applies, per support size with per-K choices (``eval.adaptation:
    per_shot``)."""

    steps: int
    inner_lr: float
    per_shot: dict[int, tuple[int, float]] | None = None
    # The validation NDCG@10 it was chosen with (``--choose-adaptation``; with per-K choices their mean);
    # None: fixed (``--steps``) or not recorded. ``metarec evaluate`` of the export reports it.
    val_score: float | None = None

    def setting(self, history: int) -> tuple[int, float]:
        """(steps, inner lr) for a history of ``history`` items: with per-K choices, the largest chosen K
        not above it (the smallest K for a shorter history)."""
        if not self.per_shot:
            return self.steps, self.inner_lr
        shots = sorted(self.per_shot)
        fitting = [k for k in shots if k <= history]
        return self.per_shot[fitting[-1] if fitting else shots[0]]

    def adaptation(self, shots: Sequence[int]) -> Adaptation:
        """The adaptation this export applies to supports of ``shots`` items, as ``metarec recommend`` picks
        it for a history of that length (``setting``): what ``metarec evaluate`` scores the export with,
        instead of choosing again on validation users (which can differ for other shots or users)."""
        if not self.per_shot:
            return Adaptation(self.steps, self.inner_lr, self.val_score, selected_on="export")
        # No per-K validation score: the choice was made at export time, on the export's own shots.
        per_shot = {k: (*self.setting(k), math.nan) for k in shots}
        return Adaptation(self.steps, self.inner_lr, self.val_score, selected_on="export", per_shot=per_shot)


def adaptation_meta(adaptation: Adaptation) -> dict[str, Any]:
    """How an export records ``adaptation`` (read back by ``parse_adaptation``)."""
    out: dict[str, Any] = {
        "steps": adaptation.steps,
        "inner_lr": adaptation.inner_lr,
        "adaptation_selected_on": adaptation.selected_on,
    }
    if adaptation.val_score is not None and adaptation.fusion is None:  # a fusion records its own scores
        out["val_ndcg@10"] = adaptation.val_score
    if adaptation.per_shot is not None:
        out["per_shot"] = {str(k): [s, lr] for k, (s, lr, _) in sorted(adaptation.per_shot.items())}
    return out


def parse_adaptation(info: Any, key: str) -> dict[str, Any]:
    """``StoredAdaptation``'s fields from a record written by ``adaptation_meta``; ``ValueError`` /
    ``TypeError`` / ``KeyError`` naming what is wrong (the caller says the export is damaged)."""
    if not isinstance(info, dict):
        raise TypeError(f"{key!r} is a {type(info).__name__}, not an object")
    per_shot = info.get("per_shot")
    if per_shot is not None and not isinstance(per_shot, dict):
        raise TypeError(f"'per_shot' is a {type(per_shot).__name__}, not an object")
    fields: dict[str, Any] = {
        "steps": int(info["steps"]),
        "inner_lr": float(info["inner_lr"]),
        "per_shot": None
        if per_shot is None
        else {int(k): (int(s), float(lr)) for k, (s, lr) in per_shot.items()},
    }
    settings = [(fields["steps"], fields["inner_lr"]), *(fields["per_shot"] or {}).values()]
    if not all(s >= 0 and 0.0 <= lr < math.inf for s, lr in settings):
        raise ValueError(f"adaptation steps and inner lr must be >= 0 and finite, got {settings}")
    return fields


def load_adaptation(folder: Path, meta: dict[str, Any]) -> StoredAdaptation | None:
    """The adaptation a plain export records (None: none; the trained one applies)."""
    info = meta.get(ADAPTATION_KEY)
    if info is None:
        return None
    try:
        fields = parse_adaptation(info, ADAPTATION_KEY)
        # A plain export's record has the score it was chosen with (a fusion's has its own per weight).
        if (score := info.get("val_ndcg@10")) is not None:
            fields["val_score"] = float(score)
        return StoredAdaptation(**fields)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"{folder}: the recorded adaptation ({ADAPTATION_KEY!r} in {ckpt.EXPORT_CONFIG}) is damaged: "
            f"{exc}; export the checkpoint again"
        ) from None


def load_validated(folder: Path, meta: dict[str, Any]) -> StoredAdaptation | None:
    """The adaptation the run's searched validation chose (``train.eval_adaptation: searched``), as its
    checkpoint or export records it; None: the run validated at the trained adaptation."""
    info = meta.get(ckpt.VALIDATED_ADAPTATION)
    if info is None or info == {}:  # {}: saved before the run's first searched validation
        return None
    try:
        return StoredAdaptation(**parse_adaptation(info, ckpt.VALIDATED_ADAPTATION))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"{folder}: the validated adaptation ({ckpt.VALIDATED_ADAPTATION!r} in {ckpt.EXPORT_CONFIG}) is "
            f"damaged: {exc}; export the checkpoint again"
        ) from None


def serving_protocol(loaded: LoadedModel) -> str:
    """The protocol an export's choices are made under: the model's own, except for a model trained with
    ``data.protocol: new_items``, whose default protocol ranks only the held-out items (no training user had
    them: their counts are all zero, every fusion weight ties). ``metarec recommend`` ranks every item, new
    and old, as the ``mixed`` protocol does: the choice is made there."""
    from metarec_dist.eval.cli import protocol_name
    from metarec_dist.eval.item_protocol import ITEM_PROTOCOLS

    name = protocol_name(loaded, None)
    return "mixed" if name in ITEM_PROTOCOLS else name


def validation_protocol(
    folder: Path, run_dir: Path | None, what: str, instead: str, device: torch.device | str = "cpu"
) -> tuple[LoadedModel, ColdStartProtocol]:
    """The complete temp export in ``folder`` loaded, with the protocol its choices are made on: the run's
    own data (relative files found from ``run_dir``, the exported checkpoint's run folder), scoring on
    ``device`` (``metarec export --device``: the loaded copy moves there, the files written stay as
    ``export`` wrote them). A data problem
    or a run without validation users is a ``UserError`` naming ``what`` (the option that needs them) and
    ``instead`` (what to pass to export without them)."""
    from metarec_dist.eval.cli import model_protocol

    model, cfg, meta, state = ckpt.load_exported(folder)
    # The folder the exported checkpoint records (a checkpoint copied out of its run folder), then the run's.
    cfg = with_training_folder_paths(cfg, run_dir, meta.get(DATA_FOLDER))
    loaded = LoadedModel(model=model, cfg=cfg, meta=meta, source=folder, algorithm_state=state)
    try:
        protocol, _ = model_protocol(loaded, sorted(cfg.eval.shots), serving_protocol(loaded), device=device)
    except ValueError as exc:  # DataError included: the data is gone, moved or changed
        raise UserError(
            f"{what} chooses on the run's validation users, and their data is not usable here: {exc}. "
            f"{instead}"
        ) from None
    if not protocol.splits.valid:
        raise UserError(
            f"{what}: the run has no validation users (data.valid_frac is 0) to choose on; {instead}"
        )
    return loaded, protocol


def check_adapts(algorithm: str, fixed: tuple[int, float] | None, choose: bool) -> None:
    """``metarec export --steps N`` (N > 0) / ``--choose-adaptation`` need a model that adapts at test time:
    ``none`` / ``sasrec`` would be fine-tuned by recommend while named as the plain model."""
    from metarec_dist.meta import ALGORITHMS

    if ALGORITHMS[algorithm].adapts or not (choose or (fixed is not None and fixed[0] > 0)):
        return
    flag = "--choose-adaptation" if choose else f"--steps {fixed[0] if fixed else 0}"
    raise UserError(
        f"{flag}: this model (meta.algorithm={algorithm}) does not adapt at test time; nothing to record "
        "(recommend and serve score it without adaptation)"
    )


def fixed_adaptation(folder: Path, steps: int | None, inner_lr: float | None) -> tuple[int, float] | None:
    """``metarec export --steps N [--inner-lr LR]`` as (steps, inner lr): the lr defaults to the trained
    ``meta.inner_lr`` of the export in ``folder``. None without ``--steps``."""
    if steps is None:
        return None
    if inner_lr is not None:
        return steps, inner_lr
    meta = json.loads((folder / ckpt.EXPORT_CONFIG).read_text(encoding="utf-8"))
    return steps, float(meta["config"]["meta"]["inner_lr"])


def add_adaptation(
    folder: Path,
    fixed: tuple[int, float] | None,
    choose: bool,
    run_dir: Path | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """``metarec export``'s step for a plain (unfused) export: record ``fixed`` (steps, inner lr), or with
    ``choose`` the adaptation chosen on validation users as ``metarec evaluate`` chooses it, on ``device``.
    Neither: the export records none (recommend and serve apply the trained one)."""
    if fixed is None and not choose:
        return
    meta = json.loads((folder / ckpt.EXPORT_CONFIG).read_text(encoding="utf-8"))
    algorithm = meta["config"]["meta"]["algorithm"]
    check_adapts(algorithm, fixed, choose)
    if fixed is not None:
        adaptation = Adaptation(*fixed, selected_on="fixed")
    else:
        loaded, protocol = validation_protocol(
            folder, run_dir, "export --choose-adaptation", "pass --steps N to record a fixed one", device
        )
        log.info("export: choosing the test-time adaptation on validation users")
        adaptation = protocol.choose_adaptation(loaded)
        meta = loaded.meta
    meta[ADAPTATION_KEY] = adaptation_meta(adaptation)
    (folder / ckpt.EXPORT_CONFIG).write_text(json.dumps(meta, indent=1))
