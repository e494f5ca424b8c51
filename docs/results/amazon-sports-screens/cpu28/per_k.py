"""Serve each support size K from the weights that K liked best on validation users: a screen, on the
test users, of what a per-K choice of weights would give over the single choice early stopping makes (the
mean NDCG@10 over K at the trained adaptation), from a run that kept a checkpoint at every validation
(cpu28/ml_curve.sh, cpu28/curve_amazon.sh) and its log's validation lines (train/early_stop.py).

Every candidate checkpoint gets the reproduction's adaptation search on the tuning validation users, each
K its own setting (eval.adaptation = per_shot), so each (step, K) has a validation NDCG@10 at its best
adaptation. Four arms, each evaluated on the test users at every K with its (step, K)'s adaptation:
  ``meanbest``  the step early stopping keeps (best mean criterion in the log): what a run serves today;
  ``tunedmean`` one step for all K, the best mean over K of the tuned validation scores;
  ``perk``      each K from its own step, the best tuned validation score at that K;
  ``perklog``   each K from its own step, the best score at that K in the log (the trained adaptation):
                what the training loop itself could choose, at no extra cost.
Every choice is made on validation users; the test users are only scored. The per-user results go where
``pair_repros.py`` reads them: ``<out>/per_user/<arm>-s<seed>.pkl``; the choices go to
``<out>/choices-s<seed>.json``.

    python docs/results/amazon-sports-screens/cpu28/per_k.py --run /work/runs/ml28/runs/curve-s0 \\
        --log /work/runs/ml28/curve-s0.log --seed 0 --out /work/runs/ml28/eval [--up-to 2000] [--top 0]

``--up-to STEP`` reads only the validations up to STEP; ``--top N`` searches only the N best steps by the
log's score at each K and the mean (the search is most of the cost on a large catalogue; 0: every step).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import re
from pathlib import Path
from typing import Any

from metarec_dist.eval.loading import LoadedModel, load_model, load_prepared
from metarec_dist.eval.protocol import Adaptation, method_name
from metarec_dist.eval.reproduce import build_protocol

LINE = re.compile(r"validation at meta-step (\d+): criterion ([0-9.]+) \[NDCG@10 ([^\]]+)\]")
PART = re.compile(r"K = (\d+) ([0-9.]+)")
Curve = dict[int, tuple[float, dict[int, float]]]


def read_curve(log: Path, up_to: int | None) -> Curve:
    """step -> (criterion, {K: NDCG@10}) from the log's validation lines."""
    curve = {}
    for m in LINE.finditer(log.read_text()):
        step = int(m.group(1))
        if up_to is None or step <= up_to:
            curve[step] = (float(m.group(2)), {int(k): float(v) for k, v in PART.findall(m.group(3))})
    if not curve:
        raise SystemExit(f"{log}: no validation line with NDCG@10 per K (run with --verbose)")
    return curve


def best(scores: dict[int, float]) -> int:
    """The earliest step with the best score, as early stopping breaks ties."""
    return max(sorted(scores), key=lambda s: (scores[s], -s))


def without_restored(curve: Curve, run: Path) -> Curve:
    """The curve without the step whose checkpoint holds restored weights: a run that stopped early (or
    ended with early stopping on) saves its final checkpoint with the best step's weights, not its own."""
    kept = {}
    for step, scores in curve.items():
        state = json.loads((run / "checkpoints" / f"step_{step:06d}" / "client_state.json").read_text())
        stop = state.get("early_stop", {})
        if not (stop.get("restored") and stop.get("best_step") != step):
            kept[step] = scores
    return kept


def candidates(curve: Curve, shots: list[int], top: int) -> list[int]:
    if not top:
        return sorted(curve)
    keep = set(sorted(curve, key=lambda s: -curve[s][0])[:top])
    for k in shots:
        keep |= set(sorted(curve, key=lambda s: -curve[s][1][k])[:top])
    return sorted(keep)


class Checkpoints:
    """The run's checkpoints, loaded once each; the data prepared once (all share the run's config)."""

    def __init__(self, run: Path, shots: list[int], cache: Path) -> None:
        self.run, self.shots, self.loaded, self.splits = run, shots, {}, None
        self.search: dict[int, Adaptation] = {}
        self.cache = cache  # the searches done, so that a second call (another --top) does none again
        if cache.is_file():
            for step, per_shot in json.loads(cache.read_text()).items():
                shot = {int(k): tuple(v) for k, v in per_shot.items()}
                self.search[int(step)] = Adaptation(0, 0.0, per_shot=shot)  # type: ignore[arg-type]

    def model(self, step: int) -> LoadedModel:
        if step not in self.loaded:
            ckpt = self.run / "checkpoints" / f"step_{step:06d}"
            if not ckpt.is_dir():
                raise SystemExit(
                    f"{ckpt}: missing (train with checkpoint.every = train.eval_every, keep all)"
                )
            self.loaded[step] = load_model(str(ckpt))
            if self.splits is None:
                self.splits = load_prepared(self.loaded[step].cfg).user_splits()
        return self.loaded[step]

    def protocol(self, step: int, shots: list[int]) -> Any:
        cfg = self.model(step).cfg
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, adaptation="per_shot"))
        return build_protocol("cold_start", self.splits, shots, cfg)

    def tuned(self, step: int) -> Adaptation:
        """The adaptation search at every K on the tuning validation users (per K: steps, lr, score)."""
        if step not in self.search:
            self.search[step] = self.protocol(step, self.shots).choose_adaptation(self.model(step))
            scores = {k: round(v[2], 5) for k, v in self.search[step].per_shot.items()}
            print("step", step, scores, flush=True)
            done = {s: a.per_shot for s, a in sorted(self.search.items())}
            tmp = self.cache.with_suffix(".tmp")
            tmp.write_text(json.dumps(done, indent=1))
            tmp.replace(self.cache)
        return self.search[step]

    def test(self, step: int, k: int, label: str) -> Any:
        steps, lr, score = self.tuned(step).per_shot[k]
        protocol = self.protocol(step, [k])
        fixed = protocol.choose_adaptation(self.model(step), fixed=(steps, lr))
        res = protocol.evaluate(
            self.model(step),
            "test",
            name=method_name(self.model(step).algorithm, False, label),
            adaptation=fixed,
        )
        return res.per_user[k], {"step": step, "steps": steps, "inner_lr": lr, "val_ndcg@10": score}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="the run folder (checkpoints/step_NNNNNN kept)")
    p.add_argument("--log", type=Path, required=True, help="its --verbose log")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--up-to", type=int, help="only the validations up to this step")
    p.add_argument("--top", type=int, default=0, help="search only the N best steps per K by the log")
    args = p.parse_args()
    curve = without_restored(read_curve(args.log, args.up_to), args.run)
    shots = sorted(next(iter(curve.values()))[1])
    args.out.mkdir(parents=True, exist_ok=True)
    ckpts = Checkpoints(args.run, shots, args.out / f"searches-s{args.seed}.json")
    steps = candidates(curve, shots, args.top)
    tuned = {s: {k: ckpts.tuned(s).per_shot[k][2] for k in shots} for s in steps}
    chosen = {
        "meanbest": dict.fromkeys(shots, best({s: c for s, (c, _) in curve.items()})),
        "tunedmean": dict.fromkeys(shots, best({s: sum(v.values()) / len(v) for s, v in tuned.items()})),
        "perk": {k: best({s: v[k] for s, v in tuned.items()}) for k in shots},
        "perklog": {k: best({s: parts[k] for s, (_, parts) in curve.items()}) for k in shots},
    }
    print("chosen", chosen, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "run": str(args.run),
        "seed": args.seed,
        "log": {str(s): c for s, c in curve.items()},
        "tuned": {str(s): v for s, v in tuned.items()},
        "chosen": chosen,
    }
    (args.out / f"choices-s{args.seed}.json").write_text(json.dumps(record, indent=1))
    done: dict[tuple[int, int], Any] = {}
    for label, by_k in chosen.items():
        per_user, info = {}, {"seed": args.seed, "run": str(args.run), "by_k": {}}
        for k, step in by_k.items():
            if (step, k) not in done:
                done[step, k] = ckpts.test(step, k, label)
            per_user[k], info["by_k"][k] = done[step, k]
        print(label, info["by_k"], flush=True)
        path = args.out / "per_user" / f"{label}-s{args.seed}.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps({label: (per_user, info)}))


if __name__ == "__main__":
    main()
