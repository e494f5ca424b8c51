"""``metarec bench eval``: one model's cold-start evaluation, phase by phase, as the reproduction runs it.

The phases of ``reproduce`` / ``evaluate_exports.py`` for a model evaluated plain and fused:

- ``adaptation``: the (steps, inner lr) grid on the tuning validation users (``choose_adaptation``);
- ``test``: the test users at the chosen adaptation (``adapted_per_user``);
- ``fusion``: the fusion weight chosen on the tuning users (``choose_fusion``);
- ``fused_test``: the test users fused at that weight.

Each phase reports its seconds and users/s (the phase's users: tuning or test ones, each scored at every
shot count). The fusion phases read the adapted states the earlier phases kept (the protocol's
``StateMemo``). ``--compare`` also times, in the same run and right before each phase it stands for, the
way it was done before: every grid point / fusion weight scored alone through ``per_user`` and the fused
test users adapted again (nothing kept), checks that both ways give the same numbers per user, and reports
the ratios (``*_speedup``).

By default the model is untrained (its timing is a trained one's) and the users are generated (``--items``,
``--valid-users``, ``--test-users``); ``--checkpoint`` evaluates a real export on the data it was trained on
(``METAREC_DATA_DIR`` as for ``metarec evaluate``). ``protocol``: the cold-start one by default, or the
leave-one-out (``loo``) or an item protocol (``new-items``, ``mixed``: generated users then hold the newest
fifth of the items out of the training users), with the same phases.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec_dist.errors import UserError

SHOTS = (1, 3, 5, 10)
TRAIN_PER_EVAL_USER = 4  # generated training users (the co-occurrence counts) per evaluated user
PROTOCOLS = ("cold_start", "loo", "new-items", "mixed")
NEW_ITEM_SHARE = 5  # generated users under an item protocol: the newest 1/5 of the items are held out


def generated(
    items: int, valid_users: int, test_users: int, seed: int = 0, new_items: bool = False
) -> tuple[Any, Any]:
    """An untrained default model (FOMAML, 3 steps at inner lr 0.5: a 17-point grid) and generated users:
    ``(loaded, splits)``. ``new_items``: the highest ``items // NEW_ITEM_SHARE`` ids held out (dropped from
    the training users, as ``data.protocol: new_items`` does), for the item protocols."""
    from metarec_dist.bench.scale import random_users
    from metarec_dist.config import load_config
    from metarec_dist.data.split import UserSplits
    from metarec_dist.eval.loading import LoadedModel
    from metarec_dist.models.recommender import SeqRecommender

    cfg = load_config(None, ["meta.algorithm=fomaml", "meta.adaptation_steps=3", "meta.inner_lr=0.5"])
    users = random_users(
        TRAIN_PER_EVAL_USER * (valid_users + test_users) + valid_users + test_users, items, seed
    )
    train_n = len(users) - valid_users - test_users
    train, held_out = users[:train_n], None
    if new_items:
        old = items - items // NEW_ITEM_SHARE
        held_out = np.arange(old + 1, items + 1)
        train = [u[u <= old] for u in train]
    splits = UserSplits(
        train=train,
        valid=users[train_n : train_n + valid_users],
        test=users[train_n + valid_users :],
        num_items=items,
        new_items=held_out,
    )
    torch.manual_seed(seed)
    model = SeqRecommender(cfg.model, items, seed=seed).eval()
    source = Path(tempfile.gettempdir())
    return LoadedModel(model=model, cfg=cfg, meta={"num_items": items}, source=source), splits


def real(checkpoint: str) -> tuple[Any, Any]:
    """An export (or checkpoint, run folder) and the user splits of the data it was trained on."""
    from metarec_dist.eval.loading import load_model, load_prepared

    loaded = load_model(checkpoint)
    return loaded, load_prepared(loaded.cfg).user_splits()


def bench_protocol(name: str, splits: Any, cfg: Any) -> Any:
    """The protocol ``name`` over ``splits``, built as ``metarec evaluate --protocol`` builds it."""
    from metarec_dist.eval.protocol import LeaveOneOutProtocol
    from metarec_dist.eval.reproduce import build_protocol

    if name == "loo":
        positions = cfg.model.max_seq_len - cfg.model.prefix_tokens(cfg.data)  # as eval/cli.py counts them
        return LeaveOneOutProtocol.build(splits, positions, cfg.eval)
    return build_protocol(name, splits, list(SHOTS), cfg)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def point_by_point_grid(protocol: Any, loaded: Any, grid: list[tuple[int, float]]) -> dict:
    """Every grid point's per-user results, each point scored alone (None: diverged), nothing kept."""
    from metarec_dist.eval.protocol import Diverged

    protocol = dataclasses.replace(protocol, memo=None)
    users, feats = protocol.tune_users(), protocol.tune_user_features()
    out = {}
    for steps, lr in grid:
        try:
            out[steps, lr] = protocol.per_user(protocol.scorer(loaded, lr), users, steps, user_features=feats)
        except Diverged:
            out[steps, lr] = None
    return out


def point_by_point_fusion(protocol: Any, loaded: Any, adaptation: Any, weights: list[float]) -> list:
    """Each fusion weight's per-user results on the tuning users, scored alone (adapting each time)."""
    protocol = dataclasses.replace(protocol, memo=None)
    users, feats = protocol.tune_users(), protocol.tune_user_features()
    return [
        protocol.adapted_per_user(loaded, dataclasses.replace(adaptation, fusion=w), users, feats)
        for w in weights
    ]


def capture(protocol: Any, methods: tuple[str, ...]) -> dict[str, Any]:
    """The last result of each of ``protocol``'s ``methods``, recorded as the phases call them (so the
    comparison reads the timed phase's own results instead of computing them again)."""
    seen: dict[str, Any] = {}

    def recording(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            seen[name] = method(*args, **kwargs)
            return seen[name]

        return call

    for name in methods:
        setattr(protocol, name, recording(name, getattr(protocol, name)))
    return seen


def same(a: Any, b: Any) -> bool:
    """Per-user results equal value for value (None: diverged, on both sides)."""
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(
        a[k].keys() == b[k].keys() and all(np.array_equal(a[k][m], b[k][m]) for m in a[k]) for k in a
    )


def run_eval_bench(
    checkpoint: str | None = None,
    items: int = 20_000,
    valid_users: int = 1000,
    test_users: int = 1000,
    compare: bool = False,
    protocol_name: str = "cold_start",
) -> dict[str, Any]:
    """The phases' seconds and users/s (see the module docstring)."""
    from metarec_dist.eval.protocol import FUSION_WEIGHTS, adaptation_grid

    if protocol_name not in PROTOCOLS:
        raise UserError(f"protocol: {protocol_name!r} is not one of {', '.join(PROTOCOLS)}")
    for flag, value, least in (
        ("--items", items, 20),
        ("--valid-users", valid_users, 1),
        ("--test-users", test_users, 1),
    ):
        if value < least:
            raise UserError(f"{flag} must be >= {least}, got {value}")
    if checkpoint:
        loaded, splits = real(checkpoint)
    else:
        item_protocol = protocol_name in ("new-items", "mixed")
        loaded, splits = generated(items, valid_users, test_users, new_items=item_protocol)
    protocol = bench_protocol(protocol_name, splits, loaded.cfg)
    meta = loaded.cfg.meta
    grid = sorted(adaptation_grid(meta.adaptation_steps, meta.inner_lr, finetune=False))
    tune_n, test_n = len(protocol.tune_users()), len(protocol.users("test"))
    phases: dict[str, dict[str, float]] = {}

    def record(name: str, seconds: float, users: int) -> None:
        phases[name] = {
            "seconds": round(seconds, 3),
            "users": users,
            "users_per_s": round(users / seconds, 2),
        }

    out: dict[str, Any] = {}
    seen = capture(protocol, ("grid_results", "fused_results"))
    if compare:
        ref_grid, seconds = timed(lambda: point_by_point_grid(protocol, loaded, grid))
        record("adaptation_point_by_point", seconds, tune_n)
    adaptation, seconds = timed(lambda: protocol.choose_adaptation(loaded))
    record("adaptation", seconds, tune_n)
    if compare:
        out["adaptation_identical"] = all(same(ref_grid[p], seen["grid_results"][p]) for p in grid)
    test_users_ = protocol.users("test")
    feats = splits.user_features("test")
    _, seconds = timed(lambda: protocol.adapted_per_user(loaded, adaptation, test_users_, feats))
    record("test", seconds, test_n)
    if compare:
        weights = sorted(FUSION_WEIGHTS)
        ref_fused, seconds = timed(lambda: point_by_point_fusion(protocol, loaded, adaptation, weights))
        record("fusion_point_by_point", seconds, tune_n)
    fused, seconds = timed(lambda: protocol.choose_fusion(loaded, adaptation))
    record("fusion", seconds, tune_n)
    if compare:
        new_fused = seen["fused_results"]
        out["fusion_identical"] = all(same(a, b) for a, b in zip(ref_fused, new_fused, strict=True))
    if compare:
        alone = dataclasses.replace(protocol, memo=None)
        ref_test, seconds = timed(lambda: alone.adapted_per_user(loaded, fused, test_users_, feats))
        record("fused_test_adapting_again", seconds, test_n)
    fused_test, seconds = timed(lambda: protocol.adapted_per_user(loaded, fused, test_users_, feats))
    record("fused_test", seconds, test_n)
    if compare:
        out["fused_test_identical"] = same(ref_test, fused_test)
    if compare:
        for name, ref in (
            ("adaptation", "adaptation_point_by_point"),
            ("fusion", "fusion_point_by_point"),
            ("fused_test", "fused_test_adapting_again"),
        ):
            out[f"{name}_speedup"] = round(phases[ref]["seconds"] / phases[name]["seconds"], 2)
    one_pass = ("adaptation", "test", "fusion", "fused_test")
    return {
        "model": checkpoint or "generated, untrained",
        "protocol": protocol_name,
        "items": splits.num_items,
        "shots": list(protocol.shots),
        "grid_points": len(grid),
        "tune_users": tune_n,
        "test_users": test_n,
        "torch_threads": torch.get_num_threads(),
        "chosen": {"steps": fused.steps, "inner_lr": fused.inner_lr, "fusion": fused.fusion},
        "phases": phases,
        "total_s": round(sum(phases[p]["seconds"] for p in one_pass), 2),
        **out,
    }
