"""Compare two per-user result files of ``gpu19/evaluate_exports.py`` (``<label>-s<seed>.pkl``): for every
method and K, the mean NDCG@10 of each, the largest per-user difference, and the adaptation each chose. Used
to check an evaluation on the GPU against the same export's evaluation on the CPU.

    python docs/results/amazon-sports-screens/gpu22/compare_per_user.py CPU.pkl GPU.pkl
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np


def compare(a_path: Path, b_path: Path) -> float:
    """Print the comparison; return the largest difference of a mean NDCG@10 over methods and K."""
    a, b = (pickle.loads(p.read_bytes()) for p in (a_path, b_path))
    worst = 0.0
    for method in sorted(set(a) | set(b)):
        if method not in a or method not in b:
            print(f"{method}: only in {a_path if method in a else b_path}")
            worst = float("inf")
            continue
        (pa, ia), (pb, ib) = a[method], b[method]
        steps = [(i.get("adaptation") or {}).get(key) for i in (ia, ib) for key in ("steps", "inner_lr")]
        print(f"{method}: adaptation {steps[:2]} vs {steps[2:]}")
        for k in sorted(pa):
            x, y = np.asarray(pa[k]["ndcg@10"]), np.asarray(pb[k]["ndcg@10"])
            gap = abs(float(x.mean()) - float(y.mean()))
            worst = max(worst, gap)
            per_user = float(np.abs(x - y).max()) if x.shape == y.shape else float("nan")
            users = f"users {x.size} / {y.size}, largest per-user gap {per_user:.2e}"
            print(f"  K={k}: ndcg@10 {x.mean():.6f} vs {y.mean():.6f} ({users})")
    return worst


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(f"largest difference of a mean: {compare(Path(sys.argv[1]), Path(sys.argv[2])):.2e}")
