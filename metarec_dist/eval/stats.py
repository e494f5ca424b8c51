"""One method's per-user results, and the statistics over users and seeds (bootstrap intervals, seed
averages, paired differences)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metarec_dist.eval.cold_start import PerUser
from metarec_dist.metrics.bootstrap import bootstrap_ci, paired_bootstrap_diff

PRIMARY = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
SECONDARY = ("hr@10", "next_ndcg@10", "mrr")


@dataclass
class MethodResult:
    name: str
    per_user: PerUser
    info: dict[str, Any] = field(default_factory=dict)  # e.g. the adaptation chosen on validation users
    seeds: list[PerUser] = field(default_factory=list)  # per-seed results when this is a seed average

    def users(self, k: int) -> int:
        return len(next(iter(self.per_user[k].values())))


def mean_over_seeds(name: str, runs: Sequence[PerUser], info: dict[str, Any] | None = None) -> MethodResult:
    """Per-user metrics averaged over seeds (the same users in every run), keeping each seed's result."""
    first = runs[0]
    for other in runs[1:]:
        for k in first:
            if len(other[k]["ndcg@10"]) != len(first[k]["ndcg@10"]):
                raise ValueError(f"{name}: seeds were evaluated on different users at K={k}")
    avg = {k: {m: np.mean([r[k][m] for r in runs], axis=0) for m in first[k]} for k in first}
    return MethodResult(name, avg, info or {}, list(runs))


def bootstrap_summary(
    result: MethodResult, n_boot: int, seed: int = 0
) -> dict[int, dict[str, dict[str, float]]]:
    """Per K and metric: mean, 95% bootstrap interval over users, and (several seeds) the seed spread."""
    out: dict[int, dict[str, dict[str, float]]] = {}
    for k, metrics in result.per_user.items():
        out[k] = {}
        for m, values in metrics.items():
            mean, lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
            row = {"mean": mean, "lo": lo, "hi": hi}
            if len(result.seeds) > 1:
                per_seed = [float(r[k][m].mean()) for r in result.seeds]
                row["seed_sd"] = float(np.std(per_seed, ddof=1))
                row["seed_min"], row["seed_max"] = min(per_seed), max(per_seed)
            out[k][m] = row
    return out


def paired_diff(
    result: MethodResult, baseline: MethodResult, n_boot: int, seed: int = 0
) -> dict[int, dict[str, dict[str, float]]]:
    """``result - baseline`` per K and metric with a paired 95% bootstrap interval over users, and the
    relative difference of the means."""
    out: dict[int, dict[str, dict[str, float]]] = {}
    for k, metrics in result.per_user.items():
        if k not in baseline.per_user:
            continue
        out[k] = {}
        for m, values in metrics.items():
            base = baseline.per_user[k][m]
            if len(base) != len(values):
                raise ValueError(
                    f"{result.name} vs {baseline.name}: different evaluation users at K={k} "
                    f"({len(values)} vs {len(base)}); were they trained on the same data?"
                )
            diff, lo, hi = paired_bootstrap_diff(values, base, n_boot=n_boot, seed=seed)
            b = float(base.mean())
            row = {"diff": diff, "lo": lo, "hi": hi, "rel": diff / b if b else float("nan")}
            if len(result.seeds) > 1 and len(result.seeds) == len(baseline.seeds):
                # Seed i against seed i: how much the difference itself moves between training runs.
                pairs = zip(result.seeds, baseline.seeds, strict=True)
                per_seed = [float(r[k][m].mean() - q[k][m].mean()) for r, q in pairs]
                row["seed_sd"] = float(np.std(per_seed, ddof=1))
            out[k][m] = row
    return out
