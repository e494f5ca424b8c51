"""Is the GPU recipe's better initialisation a better fit or less over-fitting? Each export scored with no
adaptation (its trained initialisation alone) by the cold-start protocol on the same number of *training*
users and of validation users: a model that fits its training users better but generalises no better would
show a larger gap, a regularised one a smaller gap.

    python docs/results/amazon-sports-screens/analysis21/train_gap.py --users 2000 --json OUT.json \\
        --model fomaml128=runs/gpu19/exports/fomaml128-d05-b256 \\
        --model none128=runs/gpu19/exports/none128-d05-b256 --model sasrec=runs/gpu19/exports/sasrec64
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from metarec_dist.eval.loading import load_model, load_prepared
from metarec_dist.eval.reproduce import build_protocol

SHOTS = [1, 3, 5, 10]


def scores(export: Path, users: int) -> dict[str, dict[int, float]]:
    """Split -> K -> mean NDCG@10 with no adaptation, on the first ``users`` users of that split."""
    loaded = load_model(str(export))
    splits = load_prepared(loaded.cfg).user_splits()
    protocol = build_protocol("cold_start", splits, SHOTS, loaded.cfg)
    scorer = protocol.scorer(loaded, loaded.cfg.meta.inner_lr)
    out = {}
    for split in ("train", "valid"):
        res = protocol.per_user(scorer, getattr(splits, split)[:users], 0)
        out[split] = {k: float(r["ndcg@10"].mean()) for k, r in res.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="LABEL=EXPORT_PREFIX (-s<seed> appended)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    report: dict = {"users": args.users, "no_adaptation": True, "models": {}}
    for text in args.model:
        label, prefix = text.split("=", 1)
        runs = [scores(Path(f"{prefix}-s{s}"), args.users) for s in args.seeds.split(",")]
        mean = {sp: {k: float(np.mean([r[sp][k] for r in runs])) for k in SHOTS} for sp in ("train", "valid")}
        report["models"][label] = {"seeds": runs, "mean": mean}
        for k in SHOTS:
            tr, va = mean["train"][k], mean["valid"][k]
            print(f"{label} K={k} train {tr:.4f} valid {va:.4f} train/valid {tr / va:.2f}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
