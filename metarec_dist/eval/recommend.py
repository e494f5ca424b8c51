"""Recommend for one cold-start history: adapt the fast weights on it, rank every item it does not hold.

The model adapts and scores where it is (``Recommender.to``: ``metarec recommend --device``, a ``metarec
serve`` replica given a GPU); the history's batch goes there, and the ranked items come back as Python
numbers.

Item ids on the command line are RAW ids as in the data files. They are mapped to the model's ids with the
checkpoint's own ``item_raw_ids`` when it stores them, else through the data preparation the checkpoint was
trained with (``PreparedData.item_raw_ids``); without either, they are read as model ids (1..num_items).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metarec_dist.data.features import SPECIALS, UNKNOWN, EncodedFeature, encode_user, id_features
from metarec_dist.eval.cold_start import Scorer
from metarec_dist.eval.loading import LoadedModel, check_same_data, load_prepared
from metarec_dist.eval.protocol import AdaptingScorer
from metarec_dist.metrics.ranking import mask_seen
from metarec_dist.tasks.sampler import prefix_batch

if TYPE_CHECKING:
    from metarec_dist.config import Config
    from metarec_dist.eval.fusion import Fusion

log = logging.getLogger("metarec")


@dataclass(frozen=True)
class Fields:
    """What an error calls each part of a request: ``metarec recommend``'s flags, or the JSON fields of a
    ``metarec serve`` request; the validation is shared, and each user is told about what they typed."""

    items: str = "--items"
    user: str = "--user"
    k: str = "--k"


FLAGS = Fields()
JSON_FIELDS = Fields('"items"', '"user"', '"k"')


@dataclass
class Catalogue:
    raw_ids: list[str]  # raw_ids[i - 1] is the raw id of model item i
    titles: dict[int, str]  # model item id -> title (may be empty)
    mapped: bool  # raw ids come from the data (False: identity fallback)

    @cached_property
    def index(self) -> dict[str, int]:
        """raw id -> model id, built once: per request it took 3 ms of a served answer on 18,357 items."""
        return {r: i + 1 for i, r in enumerate(self.raw_ids)}

    def to_model_ids(self, raw: list[str], fields: Fields = FLAGS) -> list[int]:
        index = self.index
        unknown = [r for r in raw if r not in index]
        if unknown:
            hint = (
                "" if self.mapped else f" (without the data, ids are the model's own: 1..{len(self.raw_ids)})"
            )
            shown = ", ".join(shorten(r) for r in unknown[:5])
            raise ValueError(f"{fields.items}: unknown item id(s) {shown}{hint}")
        return [index[r] for r in raw]


def shorten(text: str, limit: int = 40) -> str:
    """``text`` as an error repeats it: a served request's id may be 500,000 characters, which the answer
    would otherwise carry back whole."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_items(text: str) -> list[str]:
    """``"12,55,301"`` -> ``["12", "55", "301"]``; empty entries or an empty list are errors."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ValueError(f"--items {text!r}: expected comma-separated item ids, e.g. --items 12,55,301")
    return parts


def parse_user(text: str) -> dict[str, str]:
    """``"age=24,gender=M"`` -> ``{"age": "24", "gender": "M"}``; a malformed or repeated entry is an
    error."""
    stated: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ValueError(
                f"--user {text!r}: expected comma-separated name=value pairs, e.g. --user age=24,gender=M"
            )
        if name in stated:
            raise ValueError(f"--user {text!r}: feature {name!r} is given twice")
        stated[name] = value
    return stated


def encode_user_features(
    loaded: LoadedModel, stated: dict[str, str], fields: Fields = FLAGS, notes: list[str] | None = None
) -> np.ndarray:
    """The ``[1, F]`` feature ids of a user described by ``--user``, from the vocabularies the model was
    trained with. A name the model does not read is an error naming those it does; a value outside the
    vocabulary is read as unknown (a genuinely new value is one), with a note naming the feature, the value
    and known values, so that a typo is seen: printed on stderr (``metarec recommend``), or appended to
    ``notes`` when given (``metarec serve`` answers it to the client instead of logging client text)."""
    layout = loaded.model.layout
    features = layout.user_features() if layout is not None else {}
    if not features:
        raise ValueError(
            f"{fields.user}: this model reads no user features (trained without data.user_features, or with "
            "model.user_prefix=false)"
        )
    usable = [f.name for f in id_features(features)]
    stray = [name for name in stated if name not in usable]
    if stray:  # checked here, not by encode_user, so that a served request's long name is cut
        raise ValueError(
            f"{fields.user}: unknown user feature {shorten(stray[0])!r}; the declared ones are: "
            f"{', '.join(usable) or 'none'}"
        )
    try:
        row = encode_user(features, stated)
    except ValueError as exc:  # a value of the wrong kind (text for a number)
        raise ValueError(f"{fields.user} {exc}") from None
    found = unknown_value_notes(features, stated, fields)
    if notes is None:
        for note in found:
            print(f"note: {note}", file=sys.stderr)
    else:
        notes.extend(found)
    return row[None, :]


KNOWN_SHOWN = 5  # known values a note lists: an occupation vocabulary may hold thousands


def unknown_value_notes(
    features: dict[str, EncodedFeature], stated: dict[str, str], fields: Fields = FLAGS
) -> list[str]:
    """One line per stated feature whose value (a ``token_seq``: any of its tokens) is outside the training
    vocabulary, naming the feature, the value (cut when long) and a few known values."""
    notes = []
    for name, value in stated.items():
        feature = features[name]
        if not value.strip() or feature.kind == "float":  # empty: stated as unknown; numbers always bucket
            continue
        tokens = value.split() if feature.kind == "token_seq" else [value]
        ids = [feature.lookup(t) for t in tokens]  # a token_seq's lookup answers a list
        if UNKNOWN not in [i for x in ids for i in (x if isinstance(x, list) else [x])]:
            continue
        known = feature.vocab[len(SPECIALS) :]
        shown = ", ".join(shorten(v) for v in known[:KNOWN_SHOWN])
        more = f", ... ({len(known)} in all)" if len(known) > KNOWN_SHOWN else ""
        notes.append(
            f"{fields.user} {name}={shorten(value)!r}: not in the training vocabulary, read as unknown "
            f"(known values: {shown or 'none'}{more})"
        )
    return notes


def load_catalogue(loaded: LoadedModel) -> Catalogue:
    num_items = int(loaded.meta["num_items"])
    stored = loaded.meta.get("item_raw_ids")  # in the checkpoint when the trainer saves it: no data needed
    try:
        titles = {int(k): v for k, v in (loaded.meta.get("item_titles") or {}).items()}
        if stored is not None and not isinstance(stored, list):
            raise TypeError(f"'item_raw_ids' is a {type(stored).__name__}, not a list")
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{loaded.source}: the item ids or titles it stores are damaged ({exc}); "
            "export the checkpoint again"
        ) from None
    if stored is not None and len(stored) == num_items:
        return Catalogue([str(r) for r in stored], titles, mapped=True)
    try:
        prepared = load_prepared(loaded.cfg)
    except (ValueError, OSError) as exc:  # DataError is a ValueError
        log.warning("item id mapping unavailable (%s); item ids are read as model ids 1..%d", exc, num_items)
        return Catalogue([str(i) for i in range(1, num_items + 1)], titles, mapped=False)
    check_same_data(loaded, prepared)
    return Catalogue(list(prepared.item_raw_ids), titles or dict(prepared.item_titles or {}), mapped=True)


def history_window(cfg: Config) -> int:
    """How many of the most recent history items the model reads: a leave-one-out model (``data.protocol:
    loo``) the input window its evaluation reads (``model.max_seq_len - 1``, less a user token), so that a
    recommendation ranks as ``metarec evaluate --protocol loo`` scored; any other model the longest support
    it was trained for (``tasks.support_max``)."""
    if cfg.data.protocol == "loo":
        return cfg.model.max_seq_len - cfg.model.prefix_tokens(cfg.data) - 1
    return cfg.tasks.support_max


@dataclass
class Recommendation:
    rank: int
    item: int  # model id
    raw_id: str
    title: str | None
    score: float


@torch.no_grad()
def recommend(
    loaded: LoadedModel,
    catalogue: Catalogue,
    raw_items: list[str],
    k: int,
    steps: int,
    inner_lr: float,
    user_features: np.ndarray | None = None,
    fusion: Fusion | None = None,
    fields: Fields = FLAGS,
) -> list[Recommendation]:
    """Top ``k`` items after adapting ``steps`` inner steps on the history (its most recent
    ``history_window`` items). ``user_features``: the
    ``[1, F]`` ids of the user's features (``encode_user_features``); None: an unknown user. An empty
    history is a brand-new user known by its features alone: the model reads the user token and BOS, and
    there is nothing to adapt on (``steps`` is then irrelevant). ``fusion``: rank by the model fused with
    the co-occurrence counts of the history (an export made with ``--fuse``; ``FusedScorer``). ``fields``:
    what the errors call the history, the features and ``k`` (the CLI's flags or the request's fields)."""
    if not raw_items and user_features is None:
        raise ValueError(
            f"nothing to recommend from: give the user's history ({fields.items}) or, for a model trained "
            f"with data.user_features, the user's features ({fields.user})"
        )
    history = catalogue.to_model_ids(raw_items, fields)
    num_items = int(loaded.meta["num_items"])
    left = num_items - len(set(history))
    if left == 0:
        raise ValueError(
            f"{fields.items}: the history holds all {num_items} items of the catalogue; there is nothing "
            "left to recommend"
        )
    if not 1 <= k <= left:
        raise ValueError(f"{fields.k} must be between 1 and {left} (the items not in the history), got {k}")
    window = history_window(loaded.cfg)
    recent = np.asarray(history[-window:], dtype=np.int64)
    batch = prefix_batch([recent], len(recent), window, loaded.model.bos_id, user_features)
    batch = batch.to(loaded.model.fast_init.device)  # where the model is (a no-op on the CPU)
    scorer: Scorer = AdaptingScorer(loaded.model, loaded.algorithm, inner_lr, loaded.algorithm_state)
    if fusion is not None:
        scorer = fusion.scorer(scorer)
    scores = scorer.score(batch, steps if history else 0).float()
    if history:  # never re-recommend
        scores = mask_seen(scores, torch.tensor([[i - 1 for i in history]]))
    top = torch.topk(scores[0], k)
    return [
        Recommendation(r + 1, c + 1, catalogue.raw_ids[c], catalogue.titles.get(c + 1), float(s))
        for r, (c, s) in enumerate(zip(top.indices.tolist(), top.values.tolist(), strict=True))
    ]


@dataclass
class Recommender:
    """A loaded model answering one user at a time: ``metarec recommend`` once, each ``metarec serve``
    replica per request. The catalogue, the fusion and the adaptation are resolved once, at load.

    ``fixed``: (steps, inner lr) for every request (``--steps`` / ``--inner-lr``); otherwise a fused export's
    setting for the history's length (the one its weight was chosen at), else the adaptation a plain export
    records (``metarec export --choose-adaptation`` / ``--steps``), else the one the run's searched
    validation chose for the history's length (``train.eval_adaptation: searched``), else the steps the run
    validated with (``train.eval_steps``), else the trained inner loop (``none`` / ``sasrec`` adapt only with
    ``finetune``)."""

    loaded: LoadedModel
    catalogue: Catalogue
    fusion: Fusion | None = None
    fixed: tuple[int, float] | None = None
    finetune: bool = False

    @classmethod
    def load(
        cls,
        checkpoint: str,
        fuse: bool = True,
        fixed: tuple[int, float] | None = None,
        finetune: bool = False,
        device: torch.device | str = "cpu",
    ) -> Recommender:
        """``checkpoint`` loaded, its model on ``device`` (``eval/device.py``'s ``resolve_device``)."""
        from metarec_dist.eval.loading import load_model

        loaded = load_model(checkpoint)
        fusion = loaded.fusion if fuse else None
        return cls(loaded, load_catalogue(loaded), fusion, fixed, finetune).to(device)

    def to(self, device: torch.device | str) -> Recommender:
        """This recommender with its model on ``device``, in place: every request adapts and scores there
        (``AdaptingScorer`` puts the trained algorithm's parameters, Meta-SGD's rates, beside the model).
        The fusion's counts stay on the CPU (``ItemCooccurrence.weighted`` sums them there; the prior then
        goes where the scores are)."""
        self.loaded.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        """Where the model adapts and scores."""
        return self.loaded.model.fast_init.device

    def setting(self, history: int) -> tuple[int, float]:
        """(steps, inner lr) for a history of ``history`` items."""
        if self.fixed is not None:
            return self.fixed
        if self.fusion is not None and not self.finetune:
            return self.fusion.setting(history)
        if self.loaded.adaptation is not None and not self.finetune:  # export --choose-adaptation / --steps
            return self.loaded.adaptation.setting(history)
        if self.loaded.validated is not None and not self.finetune:  # train.eval_adaptation: searched
            return self.loaded.validated.setting(history)
        return self.unrecorded()[:2]

    def unrecorded(self) -> tuple[int, float, str]:
        """(steps, inner lr, source) without a recorded adaptation: 0 steps for a model that does not adapt
        (``trained``); else the steps its run validated (and so early-stopped) with, ``train.eval_steps``
        (``validated``), where set and not fine-tuning; else the trained ``meta.adaptation_steps``."""
        from metarec_dist.meta import ALGORITHMS

        meta, validated = self.loaded.cfg.meta, self.loaded.cfg.train.eval_steps
        if not (ALGORITHMS[meta.algorithm].adapts or self.finetune):
            return 0, meta.inner_lr, "trained"
        if validated is not None and not self.finetune:
            return validated, meta.inner_lr, "validated"
        return meta.adaptation_steps, meta.inner_lr, "trained"

    def served_adaptation(self) -> dict[str, Any]:
        """The adaptation requests get, as `metarec serve`'s GET / states it: ``steps`` and ``inner_lr``,
        ``per_shot`` ({K: [steps, inner lr]}, the setting for a history of K or more items) where it depends
        on the history's length, and ``source``: ``fixed`` (--steps), ``export`` (the export records it:
        ``--choose-adaptation``, ``--steps`` or its fusion), ``validated`` (what the run's searched validation
        chose per support size, ``train.eval_adaptation: searched``; or its ``train.eval_steps``, at
        meta.inner_lr) or ``trained`` (meta.adaptation_steps and meta.inner_lr; 0 steps for a model that does
        not adapt)."""
        stored = self.fusion if self.fusion is not None else self.loaded.adaptation
        source = "export" if stored is not None else "validated"
        stored = stored if stored is not None else self.loaded.validated
        if self.fixed is not None or stored is None or self.finetune:
            steps, lr = self.setting(1 << 30)  # not per history: any length answers
            source = "fixed" if self.fixed is not None else self.unrecorded()[2]
            return {"steps": steps, "inner_lr": lr, "source": source}
        out: dict[str, Any] = {"steps": stored.steps, "inner_lr": stored.inner_lr, "source": source}
        if stored.per_shot:
            out["per_shot"] = {str(k): [s, lr] for k, (s, lr) in sorted(stored.per_shot.items())}
        return out

    def __call__(
        self,
        raw_items: list[str],
        k: int,
        user: dict[str, str] | None = None,
        fields: Fields = FLAGS,
        notes: list[str] | None = None,
    ) -> list[Recommendation]:
        """Top ``k`` for a history of raw item ids (oldest first) and/or the user's stated features; a
        mistake in them is a ``ValueError`` saying which (as ``fields`` names them). ``notes``: where the
        notes on the request go (a feature value read as unknown); None: printed on stderr."""
        features = None if user is None else encode_user_features(self.loaded, user, fields, notes)
        steps, lr = self.setting(len(raw_items))
        return recommend(
            self.loaded,
            self.catalogue,
            raw_items,
            k,
            steps,
            lr,
            user_features=features,
            fusion=self.fusion,
            fields=fields,
        )
