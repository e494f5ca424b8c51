"""``train.init_from``: start a run from the model weights of a finished one (e.g. a `sasrec` backbone that a
meta-learner then fine-tunes). Only the model's weights: the optimizer, the lr schedule, the task stream and
the meta-step start fresh, and so do the parameters an algorithm owns (Meta-SGD's rates).

The weights come from a run folder (its latest complete checkpoint), a checkpoint (verified against its
manifest, any engine layout: local, DeepSpeed ZeRO shards) or an export. Parameters this model has and the
source does not (a new adapter's item factors) keep their fresh initialisation; the fast-weight init
``fast_init``, one flat vector over ``model.adapters`` in order, is copied for the adapters the two runs
share as a prefix (``[lowrank]`` into ``[lowrank, itemlr]``). Anything else that differs is an error that
names the parameter.

Across catalogues (re-training on a newer log, where items come and go and the data pipeline numbers them
afresh), items are matched by their raw id (``item_raw_ids``, saved with every checkpoint and export): every
item-indexed tensor (``item_emb`` rows 1..V and the BOS row after them, ``item_factors``, the ``bias``
adapter's slice of ``fast_init``) takes the source's row of the same raw id, new items keep their fresh
initialisation, and items this data lacks are dropped. The per-item feature buffers (``content.ids_*``,
``content.text_*``, ``content.has_id``) describe the data, so they stay this data's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metarec_dist import checkpoint as ckpt
from metarec_dist.config import Config, ModelConfig
from metarec_dist.data.features import SPECIALS
from metarec_dist.errors import UserError
from metarec_dist.models.features import FeatureLayout

log = logging.getLogger("metarec")

FAST_INIT = "fast_init"
ITEM_BIAS = "bias"  # the adapter (ItemBiasAdapter) whose fast weights are one per item
# Per-item buffers that describe the data (the item features), not learned: always this data's own.
DATA_BUFFERS = ("content.ids_", "content.text_", "content.has_id")
# The model settings that make the weights what they are: a source with another value of one of them is
# another model (another shape, or, for num_heads, the same tensors split into other heads).
# The resume's list (checkpoint.SHAPE_KEYS) less the adapters, which init_from carries over when this run's
# extend the source's (check_adapters), and their rank, compared only where both runs have ranked adapters.
MODEL_KEYS = tuple(
    k.removeprefix("model.")
    for k in ckpt.SHAPE_KEYS
    if k.startswith("model.") and k not in ("model.adapters", "model.adapter_rank")
)
ITEM_TABLES = ("item_emb.weight", "item_factors.weight")  # a row per item (and padding, BOS)
VOCAB_TABLES = ("content.embs.", "user_token.embs.")  # a row per feature value
RANKED_ADAPTERS = ("lowrank", "itemlr")  # the adapters whose fast weights model.adapter_rank sizes


def read_model_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model's weights (keys as in ``SeqRecommender``) and the run's saved facts (``config``,
    ``num_items``, ...) of the finished run at ``path``."""
    from safetensors.torch import load_file

    from metarec_dist.runtime.export import consolidated_state_dict

    p = Path(path).expanduser()
    if (p / ckpt.EXPORT_CONFIG).is_file() and (p / ckpt.EXPORT_WEIGHTS).is_file():
        return load_file(str(p / ckpt.EXPORT_WEIGHTS)), json.loads((p / ckpt.EXPORT_CONFIG).read_text())
    source_checkpoint(p)  # the source's mistakes, named

    def read(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        client = ckpt.open_checkpoint(folder)  # every file checked against the manifest
        state = consolidated_state_dict(folder / "engine")
        return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}, client

    # A run folder still training prunes its old checkpoints (checkpoint.keep): one can go while it is read.
    return ckpt.read_newest(p, ckpt.find_checkpoint, read)


def source_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint ``train.init_from`` reads at ``path`` (a run folder's newest complete one), None for an
    export; a path that is neither is a ``UserError`` saying what to give."""
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
        return None
    try:
        folder = ckpt.find_checkpoint(p)
    except UserError as exc:
        raise UserError(
            f"train.init_from {p}: {exc}; wait for its first checkpoint, or give another run"
        ) from None
    if not (folder / ckpt.MANIFEST).is_file():
        # `<run folder>/checkpoints` (where a local run keeps them) is a natural guess: point at the run.
        hint = f"; give its run folder {p.parent}" if ckpt.list_checkpoints(p.parent) else ""
        raise UserError(
            f"train.init_from {p}: not a run folder with a complete checkpoint, a checkpoint (no "
            f"{ckpt.MANIFEST}) or an export (no {ckpt.EXPORT_CONFIG}){hint}"
        )
    return folder


def source_config(path: Path, folder: Path | None) -> dict[str, Any]:
    """The config the source at ``path`` recorded (its checkpoint ``folder``'s, or its export's when
    ``folder`` is None); {} when it recorded none."""
    if folder is None:
        try:
            facts = json.loads((path / ckpt.EXPORT_CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # read (and named when damaged) by init_from itself
    else:
        try:
            facts = ckpt.read_client_state(folder)
        except UserError:
            return {}  # pruned meanwhile by a run still training: init_from reads its newest one
    config = facts.get("config") if isinstance(facts, dict) else None
    return config if isinstance(config, dict) else {}


def model_differences(config: dict[str, Any], model: ModelConfig) -> dict[str, tuple[Any, Any]]:
    """``{"model.KEY": (there, here)}``: the model settings (``MODEL_KEYS``, and ``adapter_rank`` where
    the adapters both runs have use it) in which the source's recorded ``config`` and ``model`` differ."""
    raw = config.get("model")
    if not isinstance(raw, dict):
        return {}  # a source that recorded no config: its tensors' shapes are checked when loaded
    there = ckpt.resolved_config(config)["model"]
    here = {**dataclasses.asdict(model), "intermediate_size": model.ffn_size}
    keys = list(MODEL_KEYS)
    if raw.get("intermediate_size") is None and model.intermediate_size is None:
        keys.remove("intermediate_size")  # 4 x hidden_size on both sides: hidden_size says it
    if set(RANKED_ADAPTERS) & set(model.adapters) & set(there.get("adapters") or []):
        keys.append("adapter_rank")
    return {f"model.{k}": (there[k], here[k]) for k in keys if k in there and there[k] != here[k]}


def check_model(path: str | Path, config: dict[str, Any], model: ModelConfig, detail: str = "") -> None:
    """A source whose recorded ``config`` is of another model than ``model`` is a ``UserError`` naming the
    settings and the values to give (``detail``: a clause on the first tensor that differs)."""
    changes = model_differences(config, model)
    if not changes:
        return
    said = ", ".join(f"{k} is {a!r} there and {b!r} here" for k, (a, b) in changes.items())
    sets = " ".join(f"--set {k}={a}" for k, (a, _) in changes.items())
    raise UserError(
        f"train.init_from {path}: that run is another model ({said}{detail}); give this run that run's "
        f"settings ({sets}) to start from it, or drop train.init_from to train this model from scratch"
    )


def check_adapters(path: str | Path, config: dict[str, Any], model: ModelConfig) -> None:
    """The fast-weight init carries over for the adapters the source had, which this run's
    ``model.adapters`` must therefore start with (``merge_weights``' rule): otherwise a ``UserError``
    naming both lists. Said before any data is read; two lists of the same size would even load, each
    adapter's weights in another's place."""
    recorded = config.get("model")
    there = recorded.get("adapters") if isinstance(recorded, dict) else None
    if not isinstance(there, list) or not there or model.adapters[: len(there)] == there:
        return
    given = "[" + ",".join([*there, *(a for a in model.adapters if a not in there)]) + "]"
    raise UserError(
        f"train.init_from {path}: that run's fast weights are model.adapters {there}, this run's "
        f"{model.adapters}; this run's must start with that run's (e.g. --set model.adapters={given}), or "
        "drop train.init_from to train this model from scratch"
    )


def used_features(model: dict[str, Any], data: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """The ``(name, kind)`` of the features a model of these ``model`` and ``data`` settings reads, per
    side, as ``models.features.plan_features`` builds them: item features unless ``item_content`` is
    off, user features but titles when ``user_prefix`` is on."""

    def declared(side: str) -> list[tuple[str, str]]:
        specs = data.get(f"{side}_features") or []
        return [(str(f.get("name")), str(f.get("kind"))) for f in specs if isinstance(f, dict)]

    return {
        "item": declared("item") if model.get("item_content", "sum") != "off" else [],
        "user": [f for f in declared("user") if f[1] != "title"] if model.get("user_prefix", True) else [],
    }


def check_features(path: str | Path, config: dict[str, Any], cfg: Config) -> None:
    """A source whose recorded ``config`` reads other features than ``cfg`` would is a ``UserError``
    naming them (``remap_vocabularies`` says the same once the data is read; this says it before)."""
    if not isinstance(config.get("model"), dict) or not isinstance(config.get("data"), dict):
        return  # no config recorded: the saved feature layout is compared when loaded
    there = used_features(config["model"], config["data"])
    here = used_features(dataclasses.asdict(cfg.model), dataclasses.asdict(cfg.data))
    switch = {"item": "item_content", "user": "user_prefix"}
    for side in ("item", "user"):
        if there[side] != here[side]:
            key = switch[side]
            a, b = config["model"].get(key, getattr(ModelConfig, key)), getattr(cfg.model, key)
            also = f" and the same model.{key} ({a!r} there, {b!r} here)" if a != b else ""
            raise UserError(
                f"train.init_from {path}: that run's {side} features are {there[side]}, this run's "
                f"{here[side]}; declare the same data.{side}_features as that run{also}"
            )


def absolute_source(cfg: Config) -> Config:
    """``cfg`` with a relative ``train.init_from`` made absolute against the current folder (``~``
    expanded, ``{seed}`` kept): Ray workers run in folders of their own, where it named nothing."""
    given = cfg.train.init_from
    if given is None or Path(given).expanduser().is_absolute():
        return cfg
    absolute = os.path.abspath(Path(given).expanduser())
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=absolute))


def resumes(run_dir: Path | None, resume: bool) -> bool:
    """A run in ``run_dir`` resumes from its own checkpoint, which holds every model weight (frozen ones
    too): its ``train.init_from`` source is then not read, and may be gone (a deleted previous model must
    not stop a resume). None (cloud storage): not known here, so the source is read as for a fresh run."""
    return resume and run_dir is not None and ckpt.latest_complete(Path(run_dir)) is not None


def check_resumed_source(run_dir: Path, cfg: Config) -> None:
    """Before a resume (data, Ray, a first stage to train): a run re-run with another ``train.init_from``
    or ``train.pretrain`` than it started from is refused now (``checkpoint.check_same_start``), not
    after the data is read, nor after a first stage it would ignore has trained."""
    point = ckpt.latest_complete(Path(run_dir))
    if point is not None:
        ckpt.check_same_start(point, ckpt.read_client_state(point).get("config") or {}, cfg)


def check_source(path: str | Path | None, cfg: Config | None = None) -> None:
    """``train.init_from`` checked before any work (data, a Ray cluster, the workers): a path that is no
    run, checkpoint or export, or (given this run's ``cfg``) a run of another model size or with other
    features, is a ``UserError`` now, not after the data is read and the workers have started. A run
    folder whose run is still training is used (its newest complete checkpoint) with a warning naming the
    step: that is not the run's final model."""
    if path is None:
        return
    folder = source_checkpoint(path)
    run_dir = Path(path).expanduser()
    if cfg is not None:
        config = source_config(run_dir, folder)
        check_model(path, config, cfg.model)
        check_adapters(path, config, cfg.model)
        check_features(path, config, cfg)
    if folder is None or folder == run_dir or not run_holder(run_dir):
        return
    step = ckpt.read_client_state(folder).get("step")
    log.warning(
        "train.init_from %s: that run is still training (%s); this run starts from its newest complete "
        "checkpoint, meta-step %s (%s), not from its final model",
        path,
        run_holder(run_dir),
        step,
        folder,
    )


def run_holder(run_dir: Path) -> str | None:
    """Who holds the lock of the run folder ``run_dir`` (a run training in it: ``pid N on HOST``), None when
    no run holds it. Only tries the lock (shared, at once) and lets it go."""
    import fcntl

    from metarec_dist.run_folder import LOCK_FILE

    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None  # no lock file: no run has trained here, or not on this file system
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = json.loads((run_dir / LOCK_FILE).read_text())
            return f"pid {holder['pid']} on {holder['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "its lock is held"
    except OSError:
        return None  # a file system without locks: cannot tell
    finally:
        os.close(fd)  # releases a lock taken above
    return None


def init_from(
    path: str | Path,
    model: nn.Module,
    adapters: list[str],
    item_raw_ids: list[str] | None = None,
    shuffled_split: bool = False,
    said: list[str] | None = None,
) -> list[str]:
    """Load the model weights of the run at ``path`` into ``model`` (built with ``adapters``, for a data set
    whose item i has raw id ``item_raw_ids[i - 1]``); returns the parameters left at their fresh
    initialisation (and, across catalogues, how many items were carried over and how many are new).
    ``shuffled_split``: this data's users are split by a seeded shuffle (``data.split: random``), which a
    source trained on another log did not share: a warning then says its scores may be optimistic.
    ``said``: the catalogue's line is appended there too (on Ray the workers' logs are quiet by default:
    the trainer hands it to the final summary)."""
    weights, facts = read_model_weights(path)
    own = model.state_dict()
    if isinstance(getattr(model, "cfg", None), ModelConfig):
        check_model(path, facts.get("config") or {}, model.cfg, first_shape_difference(weights, own))
    source_adapters = list(((facts.get("config") or {}).get("model") or {}).get("adapters") or [])
    fresh: list[str] = []
    rows = item_rows(path, facts, getattr(model, "num_items", None), item_raw_ids)
    if rows is not None:  # another catalogue: the source's tensors re-laid out on this one's items
        weights = remap_items(weights, own, rows, int(facts["num_items"]), model, adapters, source_adapters)
        fresh.append(say_carried_over(path, rows, int(facts["num_items"]), shuffled_split, said))
    fresh += remap_vocabularies(path, weights, own, facts, getattr(model, "layout", None), said)
    for name in weights.keys() & own.keys():
        if name.startswith(DATA_BUFFERS):  # the item features of this data (in its vocabularies), always
            weights[name] = own[name]
    unknown = sorted(weights.keys() - own.keys())
    if unknown:
        raise UserError(
            f"train.init_from {path}: its model has parameters this one lacks ({', '.join(unknown[:5])}); "
            "use the same model settings (model.adapters, feature settings) as that run"
        )
    fresh = sorted(own.keys() - weights.keys()) + fresh
    fresh += merge_weights(path, weights, own, adapters, source_adapters)
    model.load_state_dict(own)
    log.info("initialised the model from %s%s", path, f"; fresh: {', '.join(fresh)}" if fresh else "")
    return fresh


def first_shape_difference(weights: dict[str, Any], own: dict[str, Any]) -> str:
    """``; parameter NAME has shape [..] there and [..] here`` for the first tensor of both whose shape
    differs other than by the number of items or of feature values (which a newer log changes), else ''."""
    for name in sorted(weights.keys() & own.keys()):
        a, b = list(weights[name].shape), list(own[name].shape)
        by_item = name in ITEM_TABLES or name == FAST_INIT or name.startswith((*DATA_BUFFERS, *VOCAB_TABLES))
        if a[1:] != b[1:] or (a != b and not by_item):
            return f"; parameter {name} has shape {a} there and {b} here"
    return ""


def say_carried_over(
    path: str | Path, rows: Any, source_items: int, shuffled_split: bool, said: list[str] | None
) -> str:
    """Warn (and append to ``said``) how many items a source from another catalogue carried over by raw id
    (``rows[i]``: the source row of this data's item i + 1, -1 for a new one); returns the line for the
    fresh parameters."""
    known = int((rows >= 0).sum())
    if said is not None:
        said.append(
            f"{known} of this data's {len(rows)} items carried over by raw id, {len(rows) - known} new, "
            f"{source_items - known} of the source's dropped"
        )
    # Said, not only logged with --verbose: a source from other data can share ids by accident.
    log.warning(
        "train.init_from %s: another item catalogue; %d of this data's %d items carried over by raw id, "
        "%d of the source's %d dropped%s",
        path,
        known,
        len(rows),
        source_items - known,
        source_items,
        "; fewer than half of this data's or of the source's items carried over: was the source trained "
        "on an earlier log of this data set?"
        if known < len(rows) / 2 or known < source_items / 2
        else "",
    )
    if shuffled_split:
        log.warning(
            "train.init_from %s was trained on another log (another catalogue), and data.split=random "
            "shuffles each log's users anew: some of this run's validation and test users may be that "
            "run's training users, and their scores optimistic. Re-training on a newer log: use "
            "data.split=time (new users are then the newest ones in both logs)",
            path,
        )
    return (
        f"the rows of {len(rows) - known} new items ({known} items carried over by raw id, "
        f"{source_items - known} of the source's dropped)"
    )


def merge_weights(
    path: str | Path,
    weights: dict[str, Any],
    own: dict[str, Any],
    adapters: list[str],
    source_adapters: list[str],
) -> list[str]:
    """Copy the source's ``weights`` into ``own`` (this model's state dict), shape by shape; the fast-weight
    init of a source with fewer adapters fills the shared adapters' slice. Returns what stayed fresh."""
    fresh: list[str] = []
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
    return fresh


def item_rows(
    path: str | Path, facts: dict[str, Any], num_items: int | None, raw_ids: list[str] | None
) -> np.ndarray | None:
    """For each item of this data (item i at position i - 1), the source's position of the item with the
    same raw id, -1 for a new one; None when the two catalogues are the same (the weights load as is)."""
    source_n = facts.get("num_items")
    if source_n is None or num_items is None:
        return None
    source_ids = [str(r) for r in facts.get("item_raw_ids") or []]
    if source_ids and len(source_ids) != int(source_n):
        raise UserError(
            f"train.init_from {path}: that run records {len(source_ids)} raw item ids for its {source_n} "
            "items: a damaged checkpoint or export; initialise from another one"
        )
    raw_ids = [str(r) for r in (raw_ids if raw_ids is not None else [])]
    if source_ids and raw_ids:
        if source_ids == raw_ids:
            return None
        index = {r: j for j, r in enumerate(source_ids)}
        rows = np.array([index.get(r, -1) for r in raw_ids], dtype=np.int64)
        if not (rows >= 0).any():
            raise UserError(
                f"train.init_from {path}: that run's {source_n} items share no raw id with this data's "
                f"{num_items} (there {source_ids[:3]}..., here {raw_ids[:3]}...); it was trained on other "
                "data: initialise from a run on an earlier log of this data set"
            )
        return rows
    if int(source_n) == num_items:
        return None  # no raw ids to tell: the items are taken as the same, position by position
    missing = (
        "that run's checkpoint does not record its items' raw ids (item_raw_ids: a run from before they "
        "were saved)"
        if not source_ids
        else "this data has no raw item ids (synthetic data)"
    )
    raise UserError(
        f"train.init_from {path}: that run scored {source_n} items, this data has {num_items}, and "
        f"{missing}, so its items cannot be matched to these; initialise from a run on the same data "
        "config, or from one that records item_raw_ids"
    )


def remap_items(
    weights: dict[str, torch.Tensor],
    own: dict[str, torch.Tensor],
    rows: np.ndarray,
    source_items: int,
    model: nn.Module,
    adapters: list[str],
    source_adapters: list[str],
) -> dict[str, torch.Tensor]:
    """The source's ``weights`` (of ``source_items`` items) laid out on this model's catalogue (``rows``:
    ``item_rows``): item rows by raw id, this model's fresh rows (``own``) for new items. A tensor whose
    other dimensions differ is left as it is, for ``init_from`` to name it."""
    out = dict(weights)
    known = torch.from_numpy(rows >= 0)
    src = torch.from_numpy(rows[rows >= 0])
    num_items = len(rows)

    def take(name: str, value: torch.Tensor, offset: int = 0) -> torch.Tensor:
        new = own[name].clone()
        new[offset : offset + num_items][known] = value[offset + src].to(new.dtype)
        return new

    emb = weights.get("item_emb.weight")
    if emb is not None and "item_emb.weight" in own and emb.shape[1:] == own["item_emb.weight"].shape[1:]:
        new = take("item_emb.weight", emb, offset=1)  # row 0 padding, 1..V items
        new[0], new[-1] = emb[0], emb[-1]  # padding and BOS (the row after the items)
        out["item_emb.weight"] = new
    factors = weights.get("item_factors.weight")
    mine = own.get("item_factors.weight")
    if factors is not None and mine is not None and factors.shape[1:] == mine.shape[1:]:
        out["item_factors.weight"] = take("item_factors.weight", factors)  # row i - 1 is item i
    fast = weights.get(FAST_INIT)
    if (
        fast is not None
        and ITEM_BIAS in source_adapters
        and adapters[: len(source_adapters)] == source_adapters
    ):
        from metarec_dist.models.adapters import FastHead

        cfg = model.cfg
        there = FastHead(source_adapters, cfg.hidden_size, cfg.adapter_rank, source_items)
        if there.size == len(fast):  # else another model size: the shape check names it
            parts = []
            for name, s, h in zip(source_adapters, there.slices, model.head.slices, strict=False):
                if name == ITEM_BIAS:
                    part = own[FAST_INIT][h].clone()
                    part[known] = fast[s][src].to(part.dtype)
                    parts.append(part)
                else:
                    parts.append(fast[s])
            out[FAST_INIT] = torch.cat(parts)
    return out


def remap_vocabularies(
    path: str | Path,
    weights: dict[str, torch.Tensor],
    own: dict[str, torch.Tensor],
    facts: dict[str, Any],
    layout: FeatureLayout | None,
    said: list[str] | None = None,
) -> list[str]:
    """Feature embedding rows matched by their value's label, in place in ``weights``: a newer log's
    vocabulary can gain, lose and renumber values (it is built sorted from the values seen), and rows taken
    by position would then silently belong to other values. New values keep this model's fresh rows (a
    quantile-bucketed ``float`` feature whose buckets moved counts as new values: fix ``boundaries`` in its
    spec to keep them: a warning says so, with that run's boundaries). Returns what was left fresh, and
    appends a line per feature with new values to ``said`` (the summary's ``started:`` line); features
    declared differently are a ``UserError``."""
    there = FeatureLayout.from_dict(facts.get("features"))
    fresh: list[str] = []
    for side, prefix in (("item", "content.embs"), ("user", "user_token.embs")):
        mine, theirs = getattr(layout, side, None) or [], getattr(there, side, None) or []
        if [(s.name, s.kind) for s in mine] != [(s.name, s.kind) for s in theirs]:
            raise UserError(
                f"train.init_from {path}: that run's {side} features are "
                f"{[(s.name, s.kind) for s in theirs]}, this run's {[(s.name, s.kind) for s in mine]}; "
                f"declare the same data.{side}_features as that run"
            )
        if not mine:
            continue  # none on either side
        tables = [(a, b) for a, b in zip(mine, theirs, strict=True) if a.num_ids]  # text: no rows
        for k, (here_slot, there_slot) in enumerate(tables):
            name = f"{prefix}.{k}.weight"
            if not here_slot.vocab or here_slot.vocab == there_slot.vocab or name not in weights:
                continue  # hashed titles have no vocabulary: bucket b is bucket b
            if name not in own or weights[name].shape[1:] != own[name].shape[1:]:
                continue  # another model width: the shape check names it
            index = {label: j for j, label in enumerate(there_slot.vocab)}
            rows = np.array([index.get(label, -1) for label in here_slot.vocab], dtype=np.int64)
            known = torch.from_numpy(rows >= 0)
            table = own[name].clone()
            table[known] = weights[name][torch.from_numpy(rows[rows >= 0])].to(table.dtype)
            weights[name] = table
            if (rows < 0).any():
                new = int((rows < 0).sum())
                fresh.append(f"{name} ({new} new values of {side} feature {here_slot.name!r})")
                if said is not None:  # the vocabulary's own PAD and UNK rows always carry over
                    said.append(
                        f"{side} feature {here_slot.name!r}: {new} of {len(rows) - len(SPECIALS)} values new"
                    )
                _warn_if_buckets_moved(path, side, here_slot, there_slot, new)
    return fresh


def _warn_if_buckets_moved(path: str | Path, side: str, here: Any, there: Any, new: int) -> None:
    """A ``float`` feature cut at this log's quantiles is cut elsewhere on a newer log: its buckets are then
    new values, and what that run learnt for them is dropped. Said (it was INFO, seen with --verbose only),
    with the spec that keeps them."""
    if here.kind != "float" or here.boundaries == there.boundaries:
        return
    log.warning(
        "train.init_from %s: %s feature %r is cut into buckets at other boundaries than that run's (%s, "
        "there %s), so %d of its %d buckets start fresh; to carry them over, give its spec that run's: "
        "{name: %s, kind: float, boundaries: %s}",
        path,
        side,
        here.name,
        _edges(here.boundaries),
        _edges(there.boundaries),
        new,
        len(here.vocab) - len(SPECIALS),
        here.name,
        _edges(there.boundaries),
    )


def _edges(boundaries: list[float]) -> str:
    return "[" + ", ".join(f"{b:g}" for b in boundaries) + "]"
