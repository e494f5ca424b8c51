"""``train.freeze``: leave named model parameters out of training, e.g. a `sasrec` backbone and item table
under a meta-learner that then learns only the fast-weight machinery on top (``train.init_from``).

Frozen parameters get ``requires_grad`` off before the engine is built: the engines hand only trainable
parameters to the optimizer, so a frozen parameter has no gradient, no optimizer state and no weight decay,
and stays bit-identical. A name is a dotted prefix of the model's parameter names at a dot (``backbone``,
``backbone.wpe``, ``item_emb``, ``fast_init``); the algorithm's own parameters (Meta-SGD's rates) are not the
model's and always train.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from torch import nn

from metarec_dist.errors import UserError

if TYPE_CHECKING:
    from metarec_dist.config import ModelConfig

# Model parts built from the data's declared features (item content, the user token): named only once the
# data is read, so ``check_names`` leaves names under them to ``freeze``.
FEATURE_PARTS = ("content", "user_token")

log = logging.getLogger("metarec")


def prefixes(name: str) -> list[str]:
    """``a.b.c`` -> ``[a, a.b, a.b.c]``: the names that select parameter ``name``."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def valid_names(model: nn.Module) -> list[str]:
    """The names an error message offers: the model's parts and their direct sub-parts."""
    return sorted({p for n, _ in model.named_parameters() for p in prefixes(n)[:2]})


def check_names(model_cfg: ModelConfig, names: list[str]) -> None:
    """``train.freeze`` checked before any data is read or a Ray worker started (a typo took a Ray run a
    minute and a half to report): the names against a model of these settings built on the meta device
    (no memory, no data); names under the feature parts are left to ``freeze``, on the real model."""
    if not names:
        return
    import torch

    from metarec_dist.models.recommender import SeqRecommender

    with torch.device("meta"):
        model = SeqRecommender(model_cfg, 2)
    known = {p for n, _ in model.named_parameters() for p in prefixes(n)}
    unknown = [n for n in names if n not in known and n.split(".")[0] not in FEATURE_PARTS]
    if unknown:
        raise UserError(unknown_message(unknown, model))


def unknown_message(unknown: list[str], model: nn.Module) -> str:
    return (
        f"train.freeze: no model parameter is named {unknown} or under it; name a parameter or a group "
        f"by its dotted prefix, e.g. one of {valid_names(model)}"
    )


def freeze(model: nn.Module, names: list[str]) -> list[str]:
    """Turn off ``requires_grad`` for every parameter of ``model`` under one of ``names``; returns the
    frozen parameter names. Unknown names, and a freeze that leaves nothing to train, are ``UserError``s."""
    params = dict(model.named_parameters())
    known = {p for n in params for p in prefixes(n)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(unknown_message(unknown, model))
    wanted = set(names)
    frozen = [n for n in params if wanted.intersection(prefixes(n))]
    for n in frozen:
        params[n].requires_grad_(False)
    if not any(p.requires_grad for p in params.values()):
        raise UserError(f"train.freeze {names}: leaves no model parameter to train; freeze fewer")
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    log.info("train.freeze %s: %d parameter tensors frozen, %d numbers train", names, len(frozen), trainable)
    return frozen
