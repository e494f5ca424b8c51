"""``train.init_from``: start a run from the model weights of a finished one (e.g. a `sasrec` backbone that a
meta-learner then fine-tunes). Only the model's weights: the optimizer, the lr schedule, the task stream and
the meta-step start fresh, and so do the parameters an algorithm owns (Meta-SGD's rates).

The weights come from a run folder (its latest complete checkpoint), a checkpoint (verified against its
manifest, any engine layout: local, DeepSpeed ZeRO shards) or an export. Parameters this model has and the
source does not (a new adapter's item factors) keep their fresh initialisation; the fast-weight init
``fast_init``, one flat vector over ``model.adapters`` in order, is copied for the adapters the two runs
share as a prefix (``[lowrank]`` into ``[lowrank, itemlr]``). Anything else that differs is an error that
names the parameter.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarec_dist import checkpoint as ckpt
from metarec_dist.errors import UserError

log = logging.getLogger("metarec")

FAST_INIT = "fast_init"


def read_model_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model's weights (keys as in ``SeqRecommender``) and the run's saved facts (``config``,
    ``num_items``, ...) of the finished run at ``path``."""
    from safetensors.torch import load_file

    from metarec_dist.runtime.export import consolidated_state_dict

    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(
            f"train.init_from {p}: no such file or folder; give a finished run's folder, checkpoint or export"
        )
    if (p / ckpt.EXPORT_CONFIG).is_file():
        if not (p / ckpt.EXPORT_WEIGHTS).is_file():
            raise UserError(
                f"train.init_from {p}: the export has no {ckpt.EXPORT_WEIGHTS}; export the run again"
            )
        return load_file(str(p / ckpt.EXPORT_WEIGHTS)), json.loads((p / ckpt.EXPORT_CONFIG).read_text())
    folder = ckpt.find_checkpoint(p)
    if not (folder / ckpt.MANIFEST).is_file():
        raise UserError(
            f"train.init_from {p}: not a run folder with a complete checkpoint, a checkpoint (no "
            f"{ckpt.MANIFEST}) or an export (no {ckpt.EXPORT_CONFIG})"
        )
    client = ckpt.open_checkpoint(folder)  # every file checked against the manifest
    state = consolidated_state_dict(folder / "engine")
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}, client


def init_from(path: str | Path, model: nn.Module, adapters: list[str]) -> list[str]:
    """Load the model weights of the run at ``path`` into ``model`` (built with ``adapters``); returns the
    parameters left at their fresh initialisation."""
    weights, facts = read_model_weights(path)
    own = model.state_dict()
    if "num_items" in facts and int(facts["num_items"]) != getattr(model, "num_items", facts["num_items"]):
        raise UserError(
            f"train.init_from {path}: that run scored {facts['num_items']} items, this data has "
            f"{model.num_items}; initialise from a run on the same data config"
        )
    source_adapters = list(((facts.get("config") or {}).get("model") or {}).get("adapters") or [])
    unknown = sorted(weights.keys() - own.keys())
    if unknown:
        raise UserError(
            f"train.init_from {path}: its model has parameters this one lacks ({', '.join(unknown[:5])}); "
            "use the same model settings (model.adapters, feature settings) as that run"
        )
    fresh = sorted(own.keys() - weights.keys())
    for name, value in weights.items():
        if value.shape == own[name].shape:
            own[name] = value
        elif name == FAST_INIT and adapters[: len(source_adapters)] == source_adapters and source_adapters:
            own[name] = torch.cat([value, own[name][len(value) :]])  # the shared adapters' slice
            fresh.append(f"{FAST_INIT}[{len(value)}:] ({', '.join(adapters[len(source_adapters) :])})")
        else:
            raise UserError(
                f"train.init_from {path}: parameter {name} has shape {list(value.shape)} there and "
                f"{list(own[name].shape)} here; use that run's model settings (model.hidden_size, "
                f"num_layers, max_seq_len, adapters {source_adapters or '?'} first) and data"
            )
    model.load_state_dict(own)
    log.info("initialised the model from %s%s", path, f"; fresh: {', '.join(fresh)}" if fresh else "")
    return fresh
