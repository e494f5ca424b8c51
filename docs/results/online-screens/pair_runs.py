"""Test-user NDCG of several runs per arm (one per seed), averaged per user over the seeds, and paired
bootstrap intervals between arms: what `metarec evaluate` computes for one run, here over seeds, as
metarec_dist/eval/reproduce.py does (stats.mean_over_seeds, then report.build_report's paired_diff).

Each run is evaluated once, exactly as `metarec evaluate --checkpoint RUN` does (its own data config and
cold-start protocol, test users); the per-user values are cached in --per-user (a pickle per run), so a
rerun with more runs or pairs scores only the new ones.

    python docs/results/online-screens/pair_runs.py --per-user DIR --json OUT.json \
        --arm warm=RUN_S0,RUN_S1,RUN_S2 --arm scratch=RUN_S0,RUN_S1,RUN_S2 --pair warm=scratch
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

from metarec_dist.checkpoint import find_checkpoint
from metarec_dist.eval.cli import model_protocol
from metarec_dist.eval.loading import load_model
from metarec_dist.eval.report import write_json
from metarec_dist.eval.stats import bootstrap_summary, mean_over_seeds, paired_diff


def run_facts(run: str) -> dict[str, Any]:
    """The training facts of a run's final checkpoint: step, early_stop entry."""
    folder = find_checkpoint(Path(run))
    state = json.loads((folder / "client_state.json").read_text())
    early = state.get("early_stop") or {}
    return {
        "checkpoint": str(folder),
        "step": state["step"],
        "best_step": early.get("best_step"),
        "best_criterion": early.get("best") if early.get("best_step") else None,
        "seed": state["config"]["train"]["seed"],
        "init_from": state["config"]["train"].get("init_from"),
    }


def per_user(run: str, cache: Path, shots: list[int] | None) -> tuple[Any, dict[str, Any]]:
    """The run's per-user test results (cached by checkpoint folder)."""
    folder = find_checkpoint(Path(run))
    key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
    path = cache / f"{folder.parent.parent.name}-{folder.name}-{key}.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes())
    loaded = load_model(folder)
    protocol, _ = model_protocol(loaded, shots or sorted(loaded.cfg.eval.shots))
    res = protocol.evaluate(loaded, "test")
    out = (res.per_user, {**res.info, "checkpoint": str(folder)})
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(out))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arm", action="append", required=True, help="NAME=RUN[,RUN...] (one run per seed)")
    p.add_argument("--pair", action="append", default=[], help="A=B: paired interval of A - B")
    p.add_argument("--per-user", required=True, help="folder for the per-user cache")
    p.add_argument("--json", required=True)
    p.add_argument("--shots", help="e.g. 1,3,5,10 (default: each run's eval.shots)")
    p.add_argument("--n-boot", type=int, default=1000)
    args = p.parse_args()
    shots = sorted(int(s) for s in args.shots.split(",")) if args.shots else None
    cache = Path(args.per_user)
    arms, facts = {}, {}
    for text in args.arm:
        name, runs = text.split("=", 1)
        evaluated = [per_user(r, cache, shots) for r in runs.split(",")]
        facts[name] = [
            {**run_facts(r), "adaptation": e[1].get("adaptation")}
            for r, e in zip(runs.split(","), evaluated, strict=True)
        ]
        arms[name] = mean_over_seeds(name, [e[0] for e in evaluated], {"runs": facts[name]})
    doc: dict[str, Any] = {
        "n_boot": args.n_boot,
        "interval": "95% percentile bootstrap over test users; per-user values averaged over the seeds",
        "split": "test",
        "methods": {},
        "paired": [],
    }
    for name, r in arms.items():
        doc["methods"][name] = {
            "runs": facts[name],
            "users": {k: r.users(k) for k in r.per_user},
            "metrics": bootstrap_summary(r, args.n_boot),
            "per_seed_ndcg@10": {k: [float(s[k]["ndcg@10"].mean()) for s in r.seeds] for k in r.per_user},
        }
    for text in args.pair:
        a, b = text.split("=", 1)
        doc["paired"].append({"method": a, "baseline": b, "diff": paired_diff(arms[a], arms[b], args.n_boot)})
    write_json(doc, args.json)
    for name in arms:
        row = doc["methods"][name]["metrics"]
        print(name, {k: round(v["ndcg@10"]["mean"], 5) for k, v in row.items()})
    for pair in doc["paired"]:
        d = pair["diff"]
        print(
            pair["method"],
            "-",
            pair["baseline"],
            {k: [round(v["ndcg@10"][x], 5) for x in ("diff", "lo", "hi")] for k, v in d.items()},
        )


if __name__ == "__main__":
    main()
