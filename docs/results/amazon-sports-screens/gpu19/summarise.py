"""Summarise the GPU sweep (sweep.sh): each run's best validation criterion and the step it was reached at,
from its --json when the run finished, else from its newest checkpoint (a run cut by the time limit)."""

import json
import sys
from pathlib import Path


def best_of(logs: Path, runs: Path, name: str) -> tuple[float | None, int | None, int | None, str]:
    report = logs / f"{name}.json"
    if report.is_file():
        d = json.loads(report.read_text())
        return d.get("early_stop/best_criterion"), d.get("early_stop/best_step"), d.get("step"), "finished"
    points = sorted((runs / name / "checkpoints").glob("step_*/client_state.json"))
    if not points:
        return None, None, None, "no checkpoint"
    d = json.loads(points[-1].read_text())
    stop = d.get("early_stop") or {}
    return stop.get("best"), stop.get("best_step"), d.get("step"), "cut at the time limit"


def main(logs: Path, runs: Path) -> None:
    shots = (1, 3, 5, 10)
    print(
        "| run | best validation criterion | at step | last step | state | tasks/s | "
        + " | ".join(f"K = {k}" for k in shots)
        + " |"
    )
    print("|---|---|---|---|---|---|" + "---|" * len(shots))
    for log in sorted(logs.glob("*-s[0-9].log")):
        name = log.stem
        if name.startswith("smoke"):
            continue
        best, at, last, state = best_of(logs, runs, name)
        report = logs / f"{name}.json"
        d = json.loads(report.read_text()) if report.is_file() else {}
        speed = d.get("tasks_per_s")
        per_k = [d.get(f"val/ndcg@10@k{k}") for k in shots]  # the final validation, at the best weights
        cells = " | ".join("-" if v is None else f"{v:.4f}" for v in per_k)
        fmt = f"{best:.4f}" if best is not None else "-"
        print(f"| {name} | {fmt} | {at} | {last} | {state} | {speed and round(speed)} | {cells} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
