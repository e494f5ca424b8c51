"""Paired test-user comparisons between methods of *different* reproductions (e.g. a 128-wide backbone's
`sasrec` against the 64-wide one's): what `python -m metarec_dist.eval.reproduce` computes within one
reproduction (per-user values averaged over seeds, then a paired bootstrap over users), across two.

Reads the per-user results a reproduction leaves in ``<out>/per_user/<method>-s<seed>.pkl`` (or their copy
kept in the repository as ``.npz`` by ``per_user_store.py``); nothing is trained or evaluated again. An arm
is ``NAME=OUT:LABEL`` (LABEL a method label inside those files, e.g. ``sasrec`` or ``coldstart+cooc``);
``--pair A=B`` adds the paired interval of A - B.

    python docs/results/amazon-sports-screens/pair_repros.py --json OUT.json --seeds 0,1,2 \
        --arm d128=runs/repro128:sasrec --arm d64=runs/amazon-sports-repro:sasrec --pair d128=d64
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import per_user_store  # beside this script (run as a script, its folder is on sys.path)

from metarec_dist.eval.report import write_json
from metarec_dist.eval.stats import bootstrap_summary, mean_over_seeds, paired_diff


def arm(text: str, seeds: list[int]) -> tuple[str, Any]:
    """``NAME=OUT:LABEL`` -> (NAME, the label's per-user results over the seeds, averaged)."""
    name, where = text.split("=", 1)
    out, label = where.rsplit(":", 1)
    runs = []
    for seed in seeds:
        method = label.split("+", 1)[0]  # a fused variant is stored with its plain method's run
        stored = per_user_store.load(Path(out) / "per_user" / f"{method}-s{seed}")  # .pkl, or a kept .npz
        runs.append(stored[label][0])
    return name, mean_over_seeds(name, runs, {"source": where, "seeds": seeds})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arm", action="append", required=True, help="NAME=OUT:LABEL")
    p.add_argument("--pair", action="append", default=[], help="A=B: paired interval of A - B")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--json", required=True)
    p.add_argument("--n-boot", type=int, default=1000)
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = dict(arm(text, seeds) for text in args.arm)
    doc: dict[str, Any] = {
        "n_boot": args.n_boot,
        "interval": "95% percentile bootstrap over test users; per-user values averaged over the seeds",
        "methods": {n: {**r.info, "metrics": bootstrap_summary(r, args.n_boot)} for n, r in arms.items()},
        "paired": [],
    }
    for text in args.pair:
        a, b = text.split("=", 1)
        doc["paired"].append({"method": a, "baseline": b, "diff": paired_diff(arms[a], arms[b], args.n_boot)})
    write_json(doc, args.json)
    for name, row in doc["methods"].items():
        print(name, {k: round(v["ndcg@10"]["mean"], 5) for k, v in row["metrics"].items()})
    for pair in doc["paired"]:
        d = pair["diff"]
        cells = {
            k: f"{v['ndcg@10']['diff']:+.5f} [{v['ndcg@10']['lo']:+.5f}, {v['ndcg@10']['hi']:+.5f}] "
            f"({100 * v['ndcg@10']['rel']:+.1f}%)"
            for k, v in d.items()
        }
        print(pair["method"], "-", pair["baseline"], cells)


if __name__ == "__main__":
    main()
