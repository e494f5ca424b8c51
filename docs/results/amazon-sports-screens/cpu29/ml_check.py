"""Does the training loop's searched validation keep the weights the offline search chose? The weight-decay
recipe on MovieLens 100K trained again with train.eval_adaptation: searched (cpu28/ml_curve.sh ARM=wd01s,
the same seed and settings as the twenty-eighth session's ARM=wd01 run), its final checkpoint (the weights
early stopping kept) evaluated on the test users exactly as cpu28/per_k.py evaluated `tunedmean` (each K at
its adaptation searched on the tuning validation users), and the per-user results compared with the kept
`tunedmean` ones (cpu28/ml100k-wd01/per_user). Validation users choose; the test users are only scored.

    python docs/results/amazon-sports-screens/cpu29/ml_check.py --run /work/runs/ml29/runs/curve-wd01s-s0 \\
        --seed 0 --out /work/runs/ml29/eval
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "cpu28"), str(HERE.parent)]
import per_user_store  # noqa: E402
from per_k import Checkpoints  # noqa: E402

SHOTS = [1, 3, 5, 10]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    final = max(args.run.glob("checkpoints/step_*"))
    state = json.loads((final / "client_state.json").read_text())
    kept = state["early_stop"]["best_step"]
    step = int(final.name.removeprefix("step_"))
    args.out.mkdir(parents=True, exist_ok=True)
    ckpts = Checkpoints(args.run, SHOTS, args.out / f"searches-s{args.seed}.json")
    per_user, info = {}, {"seed": args.seed, "run": str(args.run), "kept_step": kept, "by_k": {}}
    for k in SHOTS:
        per_user[k], info["by_k"][k] = ckpts.test(step, k, "wd01s")
    path = args.out / "per_user" / f"wd01s-s{args.seed}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"wd01s": (per_user, info)}))
    offline = per_user_store.load(
        HERE.parent / "cpu28" / "ml100k-wd01" / "per_user" / f"tunedmean-s{args.seed}"
    )
    ref, ref_info = offline["tunedmean"]
    print(f"early stopping kept step {kept}; the offline search chose step {ref_info['by_k']['1']['step']}")
    for k in SHOTS:
        same = all(np.array_equal(per_user[k][m], ref[k][m]) for m in ref[k])
        print(
            f"K = {k}: NDCG@10 {per_user[k]['ndcg@10'].mean():.5f} (offline {ref[k]['ndcg@10'].mean():.5f}), "
            f"adaptation {info['by_k'][k]['steps']} steps at {info['by_k'][k]['inner_lr']} "
            f"(offline {ref_info['by_k'][str(k)]['steps']} at {ref_info['by_k'][str(k)]['inner_lr']}), "
            f"per-user values {'identical' if same else 'DIFFERENT'}"
        )


if __name__ == "__main__":
    main()
