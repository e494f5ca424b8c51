"""Where the GPU recipe's gain is, by how popular each test user's next item was among the training users
(``--by popularity``) or how often the training users went from the last support item to it
(``--by transition``).

Reads the per-user results that ``gpu19/evaluate_exports.py`` left (nothing is trained or scored again),
rebuilds the same test targets from the data an export was trained on (``eval/cold_start.eval_targets``:
the same users in the same order), splits the test users at each K into three equal groups by the training
count of their next item (tail / middle / head), and gives each arm's mean NDCG@10 per group (averaged over
seeds first, as the reproduction does) and the paired 95% bootstrap interval of A - B per group.

    python docs/results/amazon-sports-screens/analysis21/by_popularity.py \\
        --by popularity --export runs/gpu19/exports/sasrec64-s0 \\
        --arm fomaml128=runs/gpu19/eval:fomaml128 --arm none128=runs/gpu19/eval:none128 \\
        --arm sasrec=runs/gpu19/eval:sasrec --pair fomaml128=sasrec --pair fomaml128=none128 --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np

from metarec_dist.eval.cold_start import eval_targets
from metarec_dist.eval.loading import load_model, load_prepared


def arm(text: str, seeds: list[int], metric: str) -> tuple[str, dict[int, np.ndarray]]:
    """``NAME=OUT:LABEL`` -> (NAME, K -> per-user metric averaged over the seeds)."""
    name, where = text.split("=", 1)
    out, label = where.rsplit(":", 1)
    runs = []
    for seed in seeds:
        stored = pickle.loads((Path(out) / "per_user" / f"{label.split('+')[0]}-s{seed}.pkl").read_bytes())
        runs.append(stored[label][0])
    return name, {k: np.mean([r[k][metric] for r in runs], axis=0) for k in runs[0]}


def pair_counts(train: list[np.ndarray], num_items: int, horizon: int) -> dict[int, int]:
    """How often item b came within ``horizon`` interactions after item a in a training sequence, keyed
    ``a * num_items + b`` (0-based ids), as the co-occurrence baseline counts them."""
    keys = []
    for seq in train:
        s = seq.astype(np.int64) - 1
        for gap in range(1, min(horizon, len(s) - 1) + 1):
            keys.append(s[:-gap] * num_items + s[gap:])
    uniq, n = np.unique(np.concatenate(keys), return_counts=True)
    return dict(zip(uniq.tolist(), n.tolist(), strict=True))


def next_item_counts(export: str, ks: list[int], by: str) -> dict[int, np.ndarray]:
    """K -> per evaluated test user, in evaluation order: the training-user count of the next item
    (``popularity``) or of the pair (last support item, next item) within 10 steps (``transition``)."""
    loaded = load_model(export)
    splits = load_prepared(loaded.cfg).user_splits()
    num_relevant = loaded.cfg.eval.num_relevant
    counts = np.bincount(np.concatenate(splits.train) - 1, minlength=splits.num_items)
    pairs = pair_counts(splits.train, splits.num_items, 10) if by == "transition" else {}
    out = {}
    for k in ks:
        _, support, _, nxt = eval_targets(splits.test, k, num_relevant)
        if by == "popularity":
            out[k] = counts[nxt]
        else:
            out[k] = np.array(
                [
                    pairs.get(int(a) * splits.num_items + int(b), 0)
                    for a, b in zip(support[:, -1], nxt, strict=True)
                ]
            )
    return out


def groups(count: np.ndarray, by: str) -> dict[str, np.ndarray]:
    """``popularity``: three groups of (nearly) equal size by count (a stable sort, so equal counts keep
    evaluation order); ``transition``: the pair never seen in training, and seen."""
    if by == "transition":
        return {"unseen": np.flatnonzero(count == 0), "seen": np.flatnonzero(count > 0)}
    return dict(
        zip(("tail", "middle", "head"), np.array_split(np.argsort(count, kind="stable"), 3), strict=True)
    )


def interval(diff: np.ndarray, rng: np.random.Generator, draws: int = 2000) -> tuple[float, float]:
    idx = rng.integers(0, len(diff), size=(draws, len(diff)))
    means = diff[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", required=True, help="any export trained on the data (for the test targets)")
    p.add_argument("--arm", action="append", required=True, help="NAME=OUT:LABEL")
    p.add_argument("--pair", action="append", default=[], help="A=B")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--metric", default="ndcg@10")
    p.add_argument("--by", choices=["popularity", "transition"], default="popularity")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = dict(arm(text, seeds, args.metric) for text in args.arm)
    ks = sorted(next(iter(arms.values())))
    counts = next_item_counts(args.export, ks, args.by)
    rng = np.random.default_rng(0)
    report: dict = {"by": args.by, "metric": args.metric, "seeds": seeds, "arms": args.arm, "by_k": {}}
    for k in ks:
        assert all(len(a[k]) == len(counts[k]) for a in arms.values()), (
            "per-user results do not match targets"
        )
        rows = {}
        for name, idx in groups(counts[k], args.by).items():
            row = {
                "users": len(idx),
                "count_range": [int(counts[k][idx].min()), int(counts[k][idx].max())],
                "mean": {a: float(v[k][idx].mean()) for a, v in arms.items()},
            }
            for pair in args.pair:
                a, b = pair.split("=")
                diff = arms[a][k][idx] - arms[b][k][idx]
                lo, hi = interval(diff, rng)
                base = float(arms[b][k][idx].mean())
                row[pair] = {"diff": float(diff.mean()), "lo": lo, "hi": hi, "rel": float(diff.mean()) / base}
            rows[name] = row
            text = " ".join(f"{a} {m:.4f}" for a, m in row["mean"].items())
            pairs = " ".join(
                f"{pr} {row[pr]['rel']:+.1%} [{row[pr]['lo']:+.4f}, {row[pr]['hi']:+.4f}]" for pr in args.pair
            )
            print(f"K={k} {name:6s} n={len(idx)} counts {row['count_range']} {text} | {pairs}", flush=True)
        report["by_k"][str(k)] = rows
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
